"""The queue before ``huey.init(settings)``: any use of its storage is a clear error."""

from __future__ import annotations


class QueueNotInitialised(RuntimeError):
    """The queue was used before ``huey.init(settings)``."""


def not_initialised() -> QueueNotInitialised:
    return QueueNotInitialised(
        "the qrq queue is not initialised: call qrq.queue.huey.init(settings) first "
        "(create_app, huey_app.py and the CLI's get_queue do)")


class NoStorage:
    """Stands in for the storage until :meth:`QrqHuey.init`: any use is a clear error."""

    def __getattr__(self, name: str):
        raise not_initialised()

    def close(self) -> bool:
        return False

    def dispose(self) -> None:
        pass
