"""Sending a job's output file: only the regular file the job wrote, as the job wrote it.

Every download route goes through :func:`send_artifact`. The file is opened once,
without following a symlink, and checked on that open descriptor (a regular file
whose size is the one the job recorded), so what is checked is what is sent: a
symlink or a file changed after the job (truncated, appended, swapped) is refused
as unavailable, and the operator finds the reason in the log.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from pathlib import Path

from flask import Response, request, send_file

from qrq.errors import NotFound

logger = logging.getLogger("qrq.web")


def _refuse(path: Path, reason: str, message: str) -> NotFound:
    logger.warning("download of %s refused: %s", path.name, reason)
    return NotFound(message)


def send_artifact(path: Path, size: int | None, mimetype: str | None, download_name: str,
                  missing: str, as_attachment: bool = False) -> Response:
    """*path* as a download, if it is a regular file of *size* bytes (None: not recorded).

    *mimetype* None guesses it from *download_name*.

    :raises NotFound: with *missing* as the message: no such file, a symlink, not a
        regular file, or a size other than the recorded one.
    """
    try:
        # O_NONBLOCK: a FIFO put in the file's place must not hang the request.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NotFound(missing) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _refuse(path, "it is a symlink", missing) from None
        raise
    try:
        found = os.fstat(fd)
        if not stat.S_ISREG(found.st_mode):
            raise _refuse(path, "not a regular file", missing)
        if size is not None and found.st_size != size:
            raise _refuse(path, f"{found.st_size} bytes, the job recorded {size}", missing)
        file = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    response = send_file(file, mimetype=mimetype, download_name=download_name, max_age=0,
                         as_attachment=as_attachment, conditional=False, etag=False)
    response.content_length = found.st_size
    response.last_modified = found.st_mtime
    response.set_etag(f"{found.st_ino:x}-{found.st_mtime_ns:x}-{found.st_size:x}")
    return response.make_conditional(request.environ, accept_ranges=True,
                                     complete_length=found.st_size)
