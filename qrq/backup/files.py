"""Private files for backups: modes, durable writes, disk space.

A backup set holds every database qrq has and the key that signs the queue, so it
is readable by its owner only (files 0600, directories 0700), whatever the umask
of the process that writes it; the same holds for restored files.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import BinaryIO

from qrq.config.files import file_in_the_way, nearest_existing
from qrq.errors import QrqError

FILE_MODE = 0o600
DIR_MODE = 0o700
MARGIN = 16 << 20  # free space kept beyond an estimate


class InsufficientSpace(QrqError):
    """Not enough free disk space for the backup."""

    status = 507
    code = "insufficient_storage"


class UnusableDirectory(QrqError):
    """The backup directory cannot hold backups."""

    status = 500
    code = "backup_dir_unusable"


def check_directory(path: Path, what: str) -> None:
    """Whether *path* is, or can be made, a directory qrq writes in (nothing is made).

    :raises UnusableDirectory: a file is there, or on its way; or it (or, when it does
        not exist yet, its nearest part that does) cannot be written.
    """
    try:
        blocked, folder = file_in_the_way(path), nearest_existing(path)
    except OSError as exc:  # a parent it may not search (someone else's home)
        raise UnusableDirectory(f"{what} {path}: {exc.strerror}") from None
    if blocked is not None:
        raise UnusableDirectory(f"{what} {path}: {blocked}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UnusableDirectory(f"{what} {path}: " + (
            "it cannot be written (permissions, or a read-only file system)" if folder == path
            else f"it cannot be created: {folder} cannot be written (permissions, or a "
                 "read-only file system)"))


def backups_dir_or_exit(settings) -> None:
    """For a consumer that is starting and runs backups (it takes ``maintenance`` jobs): a
    backup directory that cannot hold backups ends it with one line, instead of backup
    jobs that fail one by one. A host that runs none may have no such directory."""
    if "maintenance" in settings.exclude_types or (
            settings.accept_types and "maintenance" not in settings.accept_types):
        return
    what = ("the backup directory (QRQ_BACKUP_DIR)" if settings.backup_dir
            else "the backup directory (QRQ_BACKUP_DIR unset: backups in the data directory)")
    try:
        check_directory(settings.backups_dir, what)
    except UnusableDirectory as exc:
        raise SystemExit(f"Error: {exc.message}") from None


def make_dirs(path: Path) -> None:
    """Create *path* and its missing parents, each 0700; existing ones are left alone."""
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, DIR_MODE)
        except FileExistsError:
            continue
        os.chmod(folder, DIR_MODE)  # the umask may have taken bits mkdir asked for


def create(path: Path) -> BinaryIO:
    """Open a new (or truncated) file for writing, 0600 from its first byte."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    os.fchmod(fd, FILE_MODE)  # an existing file keeps its mode through O_CREAT
    return os.fdopen(fd, "wb")


def copy(src: Path, dest: Path) -> None:
    """Copy *src* into a new private file *dest*."""
    with open(src, "rb") as fin, create(dest) as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)


def fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json(path: Path, data: dict) -> None:
    """Write *data* durably: a private temporary file, fsynced, renamed over *path*."""
    tmp = path.with_name(f".{path.name}.tmp")
    with create(tmp) as fh:
        fh.write(json.dumps(data, indent=1).encode())
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def discard(path: Path) -> None:
    """Delete a database file and whatever SQLite left next to it."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def check_space(folder: Path, needed: int, what: str) -> None:
    """:raises InsufficientSpace: *folder*'s file system has less than *needed* bytes free."""
    while not folder.exists():
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise InsufficientSpace(f"{what} needs about {needed >> 20} MiB free in {folder}, "
                                f"only {free >> 20} MiB left; nothing was written")
