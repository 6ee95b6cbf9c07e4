"""What every artifact store does: the one interface that job outputs are written,
read, listed and deleted through, whichever store holds them."""

from __future__ import annotations

import abc
import dataclasses
import logging
import re
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import BinaryIO

from qrq.errors import StoreUnavailable

logger = logging.getLogger("qrq.artifacts")

# Artifact names are flat (``<job_id>.pdf``): no directories, never hidden (a leading dot
# marks a store's own temporary files).
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


def unavailable(message: str) -> StoreUnavailable:
    """The error for a store out of reach, logged with its reason (the web's 503 body
    does not carry it)."""
    logger.warning("%s", message)
    return StoreUnavailable(message)


def check_name(name: str, *, prefix: bool = False) -> str:
    """*name* if it is an artifact name (or, with *prefix*, the start of one).

    :raises ValueError: anything else (a path, a hidden name): a caller's bug, since
        names are built from validated job ids, never taken from a request.
    """
    if not (prefix and name == "") and not _NAME.fullmatch(name):
        raise ValueError(f"not an artifact name: {name[:100]!r}")
    return name


@dataclasses.dataclass(frozen=True)
class ArtifactInfo:
    """One stored artifact: its name, size in bytes, modification time (seconds since
    the epoch) and an ETag that changes whenever its content may have."""

    name: str
    size: int
    mtime: float
    etag: str


class ArtifactStore(abc.ABC):
    """Where job outputs live. Writes are atomic: a reader sees the whole file or none.

    Missing or unreachable storage raises :class:`~qrq.errors.StoreUnavailable`; a
    missing artifact is ``None`` from :meth:`stat` and ``FileNotFoundError`` from
    :meth:`open`.
    """

    #: Shown in messages: a directory or ``s3://bucket/prefix``.
    location: str
    #: Whether :meth:`url` gives presigned download URLs.
    presigns: bool = False

    @abc.abstractmethod
    def write(self, name: str) -> AbstractContextManager[Path]:
        """A local temporary file to write *name* into, published under *name* when
        the ``with`` block ends without an error (and discarded when it raises)."""

    @abc.abstractmethod
    def open(self, name: str) -> tuple[BinaryIO, ArtifactInfo]:
        """*name* opened for reading (seekable), with what was opened.

        :raises FileNotFoundError: no such artifact (or not a regular file).
        """

    @abc.abstractmethod
    def stat(self, name: str) -> ArtifactInfo | None:
        """What *name* is, or None when there is no such artifact."""

    @abc.abstractmethod
    def delete(self, names: Iterable[str]) -> None:
        """Delete the artifacts *names*; absent ones are no error."""

    @abc.abstractmethod
    def list(self, prefix: str = "") -> Iterator[ArtifactInfo]:
        """Every published artifact whose name starts with *prefix*."""

    @abc.abstractmethod
    def sweep(self, before: float) -> int:
        """Remove what writes that never finished left before *before* (seconds since the
        epoch); return how many."""

    @abc.abstractmethod
    def check(self) -> None:
        """:raises StoreUnavailable: the store is missing or cannot be reached."""

    @abc.abstractmethod
    def describe(self, name: str) -> str:
        """Where *name* is, for people: a path or an ``s3://`` URI."""

    def url(self, name: str, expires: int, *, download_name: str, content_type: str,
            attachment: bool = False) -> str:
        """A URL that downloads *name* without credentials for *expires* seconds
        (only when :attr:`presigns`)."""
        raise NotImplementedError(f"the artifact store {self.location} gives no URLs")
