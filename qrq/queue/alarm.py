"""A deadline that one thread sleeps until and other threads move without waking it.

The thread that writes a batch's late ends (:mod:`qrq.queue.run_ahead`) must wake if a
run goes on too long, yet nearly every batch ends long before that. Waking it to set the
deadline, and again when the deadline passed, cost two context switches per batch. On
Linux the deadline is a ``timerfd``: setting or clearing it is one system call, and the
sleeper wakes only when it passes. Elsewhere an ``Event`` wakes the sleeper whenever
another thread sets a deadline, and the sleeper then waits until it.
"""

from __future__ import annotations

import ctypes
import os
import select
import threading
import time
import weakref


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


_CLOCK_MONOTONIC = 1  # time.monotonic()'s clock on Linux
_TFD_TIMER_ABSTIME = 1


def _timerfd():
    """libc, if it has timerfd (Linux) and this Python has eventfd; else None."""
    if not hasattr(os, "eventfd"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    return libc if hasattr(libc, "timerfd_create") and hasattr(libc, "timerfd_settime") \
        else None


_LIBC = _timerfd()


class Alarm:
    """Wakes the thread in :meth:`wait` at the deadline last :meth:`set`, or at once on
    :meth:`wake`. Set it under the caller's own lock, with the state the deadline
    follows from: the sleeper reads that state again after each wake."""

    def __init__(self):
        self._sleeper = None  # the thread in wait(), last seen
        self._deadline = None
        self._event = threading.Event()
        self._timer = self._wakeup = None
        if _LIBC is not None:
            timer = _LIBC.timerfd_create(_CLOCK_MONOTONIC, os.O_CLOEXEC | os.O_NONBLOCK)
            if timer >= 0:
                self._timer = timer
                self._wakeup = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
                self._poll = select.poll()
                for fd in (self._timer, self._wakeup):
                    self._poll.register(fd, select.POLLIN)
                weakref.finalize(self, close_fds, self._timer, self._wakeup)

    @property
    def deadline(self) -> float | None:
        """The deadline last set (None: none)."""
        return self._deadline

    def set(self, deadline: float | None) -> None:
        """Wake the sleeper at *deadline* (``time.monotonic()``), or not at all (None)."""
        self._deadline = deadline
        if self._timer is not None:
            spec = _Itimerspec()
            if deadline is not None:  # a zero it_value would disarm the timer
                seconds = max(deadline, 1e-9)
                spec.it_value.tv_sec = int(seconds)
                spec.it_value.tv_nsec = int((seconds % 1) * 1e9)
            if _LIBC.timerfd_settime(self._timer, _TFD_TIMER_ABSTIME, ctypes.byref(spec),
                                     None) != 0:
                raise OSError(ctypes.get_errno(), "timerfd_settime failed")
        elif deadline is not None and threading.get_ident() != self._sleeper:
            self._event.set()  # the sleeper waits until the new deadline

    def wake(self) -> None:
        """Wake the sleeper now."""
        if self._wakeup is not None:
            os.eventfd_write(self._wakeup, 1)
        else:
            self._event.set()

    def wait(self) -> None:
        """Sleep until the deadline passes or :meth:`wake` is called (perhaps sooner:
        the caller looks at its state again and sets the next deadline)."""
        self._sleeper = threading.get_ident()
        if self._timer is None:
            deadline = self._deadline
            self._event.wait(None if deadline is None
                             else max(0.0, deadline - time.monotonic()))
            self._event.clear()
            return
        self._poll.poll()
        for fd in (self._timer, self._wakeup):
            try:
                os.read(fd, 8)
            except BlockingIOError:
                pass


def close_fds(*fds: int) -> None:
    """Close *fds* (a finalizer's work, once their owner is gone)."""
    for fd in fds:
        os.close(fd)
