"""The data directory on disk: private to its owner, whatever the umask.

Below the settings table (it takes the settings only to read their paths), so that
:meth:`Settings.ensure_dirs` and :func:`~qrq.config.load.load_settings` share it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only; settings.py imports this module
    from qrq.config.settings import Settings

# Files 0600, directories 0700: databases, artifacts, backups, logs and mail hold
# other people's data, whatever umask the process was started with.
PRIVATE_UMASK = 0o077


def nearest_existing(path: Path) -> Path:
    """*path*, or the nearest of its parents that exists (a file on the way stops the
    walk there). :raises OSError: a part cannot be looked at (a parent it may not
    search, a name too long)."""
    while not path.exists() and path != path.parent:  # (False below a file too)
        path = path.parent
    return path


def file_in_the_way(path: Path) -> str | None:
    """What keeps *path* from being a directory, if a file does: one there, or one
    where a directory on its way belongs; None otherwise.
    :raises OSError: as :func:`nearest_existing`."""
    found = nearest_existing(path)
    if found.is_dir():
        return None
    return ("a file is there, where a directory belongs" if found == path
            else f"{found} is a file, where a directory belongs")


def holds_qrq_data(path: Path) -> bool:
    """Whether *path* is a qrq data directory (``qrq init`` has run there).

    On SQLite it holds the databases; on PostgreSQL (``QRQ_DATABASE_URL``) it holds no
    database, but every qrq process leaves ``logs/`` there (:meth:`Settings.ensure_dirs`),
    and ``secret.key`` unless the secret comes from the environment.
    """
    return (any((path / name).is_file() for name in ("queue.db", "app.db", "secret.key"))
            or (path / "logs").is_dir())


def make_private(settings: Settings) -> None:
    """Take group and other access away from what earlier runs left readable: qrq's
    directories and everything at the top of the data directory."""
    uid = os.getuid()
    found = [*settings.private_paths]
    if settings.data_dir.is_dir():
        found += settings.data_dir.iterdir()
    for path in found:
        try:
            info = path.lstat()
        except OSError:  # not there, or not to be looked at: said by the start-up checks
            continue
        mode = stat.S_IMODE(info.st_mode)
        # Only what this user owns and never through a symlink.
        if info.st_uid == uid and not stat.S_ISLNK(info.st_mode) and mode & 0o077:
            path.chmod(mode & ~0o077)
