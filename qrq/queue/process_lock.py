"""A lock that a consumer's processes share, made before its workers fork.

The consumer's workers queue on one for SQLite's write lock (``ThreadedSqliteStorage``'s
``writers``), and agree on which of them polls under another
(:mod:`qrq.queue.poll_schedule`).
It is a ``fcntl`` lock on a file in memory: the kernel wakes a waiter as soon as the
lock is released, and drops it when its holder dies, so a killed worker never stalls
the others. Threads of one process take a thread lock first (``fcntl`` locks belong to
a process, not a thread).
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import threading
import weakref


def shared_file(name: str) -> int:
    """A descriptor of an anonymous file, which forked children inherit: in memory where
    Linux offers one (memfd)."""
    if hasattr(os, "memfd_create"):
        return os.memfd_create(name)
    fd, path = tempfile.mkstemp(prefix=f"{name}-")
    os.unlink(path)
    return fd


class ProcessLock:
    """A lock shared by this process and those it forks after making it (and by their
    threads); use it as a context manager. *fd*: the shared file to lock (a new one
    by default)."""

    def __init__(self, name: str = "qrq-lock", fd: int | None = None):
        if fd is None:
            fd = shared_file(name)
            weakref.finalize(self, os.close, fd)
        self.fd = fd
        self._threads = threading.Lock()
        self._pid = os.getpid()

    def __enter__(self) -> ProcessLock:
        if self._pid != os.getpid():  # forked: another thread may have held it at the fork
            self._threads, self._pid = threading.Lock(), os.getpid()
        self._threads.acquire()
        try:
            fcntl.lockf(self.fd, fcntl.LOCK_EX)
        except BaseException:
            self._threads.release()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        try:
            fcntl.lockf(self.fd, fcntl.LOCK_UN)
        finally:
            self._threads.release()
