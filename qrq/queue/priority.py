"""CPU and I/O priority of the consumer's worker processes.

Rendering a PDF keeps a core busy and writes (and fsyncs) its file; on a machine that
also serves the web app, that work delays the requests: they wait for a core, and an
enqueue waits for its commit's fsync behind the worker's writes. Worker processes
therefore run at a lower CPU priority (``nice``) and a lower I/O priority (the Linux
I/O scheduler serves the web app's reads and writes first), so bulk work takes what the
web app leaves. Both are settings (``QRQ_WORKER_NICE``, ``QRQ_WORKER_IO_PRIORITY``).
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform

logger = logging.getLogger("qrq.queue.priority")

# ioprio_set(2): which = IOPRIO_WHO_PROCESS, value = class << 13 | level.
_IOPRIO_WHO_PROCESS = 1
_IOPRIO_CLASS_SHIFT = 13
_IOPRIO = {"low": (2 << _IOPRIO_CLASS_SHIFT) | 7,  # best effort, lowest level
           "idle": 3 << _IOPRIO_CLASS_SHIFT}  # only when the disk is otherwise idle
_SYS_IOPRIO_SET = {"x86_64": 251, "aarch64": 30, "arm64": 30}


def lower_priority(nice: int, io_priority: str) -> None:
    """Lower the calling process's CPU priority by *nice* and set its I/O priority to
    *io_priority* ("low", "idle", or "normal", which leaves it). Where the
    system refuses (not Linux, a sandbox), it logs why and the process runs as it
    was: priorities are a courtesy to the web app, never a reason not to work."""
    if io_priority != "normal" and not _set_io_priority(_IOPRIO[io_priority]):
        logger.warning("could not set the worker's I/O priority to %s", io_priority)
    if nice:
        try:
            os.nice(nice)
        except OSError as exc:
            logger.warning("could not lower the worker's CPU priority: %s", exc)


def _set_io_priority(value: int) -> bool:
    number = _SYS_IOPRIO_SET.get(platform.machine())
    if number is None or platform.system() != "Linux":
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.syscall(number, _IOPRIO_WHO_PROCESS, 0, value) == 0
    except (OSError, AttributeError):
        return False
