"""Artifacts as files in one directory: ``<data>/artifacts`` or a shared mount (NFS).

A write goes to a temporary file in the same directory, is fsynced and renamed over
the final name, so after a crash the name holds the whole new file or the old one. A
read opens the file without following a symlink and checks what it opened, so what
is checked is what is sent.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, NoReturn

from qrq.artifacts.store import ArtifactInfo, ArtifactStore, check_name, logger, unavailable
from qrq.errors import StoreUnavailable

# A full disk is reported as itself (StorageFull in the web layer), not as a missing store.
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}


class DirectoryStore(ArtifactStore):
    """Artifacts in *root*; *create* makes it when missing (qrq's own ``<data>/artifacts``),
    otherwise a missing *root* is a missing store (a shared mount not mounted)."""

    def __init__(self, root: Path, *, create: bool = False) -> None:
        self.root = Path(root)
        self.create = create
        self.location = str(self.root)

    def _unavailable(self, exc: OSError | None = None) -> StoreUnavailable:
        if exc is None or isinstance(exc, FileNotFoundError | NotADirectoryError):
            return unavailable(f"the artifact store {self.root} does not exist or is not a "
                               "directory (is the shared mount there?)")
        return unavailable(f"the artifact store {self.root} failed: {exc}")

    def _fail(self, exc: OSError) -> NoReturn:
        """Raise what *exc* means: a full disk as itself, anything else as the store out
        of reach."""
        if exc.errno in _DISK_FULL:
            raise exc
        raise self._unavailable(exc) from exc

    def _root_is_missing(self) -> bool:
        return not self.create and not self.root.is_dir()

    @contextlib.contextmanager
    def write(self, name: str) -> Iterator[Path]:
        check_name(name)
        tmp = self.root / f".{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        try:
            if self.create:
                self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
        except OSError as exc:
            self._fail(exc)
        try:
            yield tmp
            try:
                with open(tmp, "rb") as fh:
                    os.fsync(fh.fileno())
                os.replace(tmp, self.root / name)
            except OSError as exc:
                self._fail(exc)
        finally:
            tmp.unlink(missing_ok=True)

    def open(self, name: str) -> tuple[BinaryIO, ArtifactInfo]:
        path = self.root / check_name(name)
        try:
            # O_NONBLOCK: a FIFO put in the file's place must not hang the reader.
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            if self._root_is_missing():
                raise self._unavailable() from None
            raise
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise self._refused(path, "it is a symlink") from None
            self._fail(exc)
        try:
            found = os.fstat(fd)
            if not stat.S_ISREG(found.st_mode):
                raise self._refused(path, "not a regular file")
            file = os.fdopen(fd, "rb")
        except BaseException:
            os.close(fd)
            raise
        return file, _info(name, found)

    @staticmethod
    def _refused(path: Path, reason: str) -> FileNotFoundError:
        logger.warning("artifact %s refused: %s", path.name, reason)
        return FileNotFoundError(errno.ENOENT, f"not a regular file ({reason})", path.name)

    def stat(self, name: str) -> ArtifactInfo | None:
        try:
            found = os.stat(self.root / check_name(name), follow_symlinks=False)
        except FileNotFoundError:
            if self._root_is_missing():
                raise self._unavailable() from None
            return None
        except OSError as exc:
            self._fail(exc)
        return _info(name, found) if stat.S_ISREG(found.st_mode) else None

    def delete(self, names: Iterable[str]) -> None:
        if self._root_is_missing():
            raise self._unavailable()
        for name in names:
            try:
                (self.root / check_name(name)).unlink(missing_ok=True)
            except OSError as exc:
                self._fail(exc)

    def _entries(self) -> Iterator[os.DirEntry]:
        try:
            with os.scandir(self.root) as entries:
                yield from entries
        except FileNotFoundError:
            if not self.create:
                raise self._unavailable() from None
        except OSError as exc:
            self._fail(exc)

    def list(self, prefix: str = "") -> Iterator[ArtifactInfo]:
        check_name(prefix, prefix=True)
        for entry in self._entries():
            if entry.name.startswith(prefix) and not entry.name.startswith("."):
                try:  # a file may be deleted while the listing runs
                    found = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if stat.S_ISREG(found.st_mode):
                    yield _info(entry.name, found)

    def sweep(self, before: float) -> int:
        swept = 0
        for entry in self._entries():
            if entry.name.startswith(".") and entry.name.endswith(".tmp"):
                try:
                    if entry.stat(follow_symlinks=False).st_mtime < before:
                        os.unlink(entry.path)
                        swept += 1
                except FileNotFoundError:  # renamed into place meanwhile
                    continue
        return swept

    def check(self) -> None:
        if self.create:
            try:
                self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            except OSError as exc:
                self._fail(exc)
        if not self.root.is_dir():
            raise self._unavailable()
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise unavailable(f"the artifact store {self.root} is not writable by this "
                              "user")

    def describe(self, name: str) -> str:
        return str(self.root / check_name(name))


def _info(name: str, found: os.stat_result) -> ArtifactInfo:
    return ArtifactInfo(name, found.st_size, found.st_mtime,
                        f"{found.st_ino:x}-{found.st_mtime_ns:x}-{found.st_size:x}")
