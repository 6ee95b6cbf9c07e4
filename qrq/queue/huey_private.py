"""Every place qrq's Huey subclass reaches into a private part of huey.

huey has no public API for these: overriding how a failed task is requeued,
a hook as a task starts (in flight), emitting a signal for a task huey did not
enqueue itself, the consumer's clock, listing the registered tasks, building a
message for a task this process has not imported. Keeping them here means an
upgrade of huey is checked in one file. Checked with huey 3.5.2 to 3.5.4
(``huey/api.py``, ``huey/registry.py``).

(The storage subclass, :mod:`qrq.queue.storage`, extends ``SqliteStorage``
through its documented override points plus its ``conn``/``lock``/``to_blob``
attributes; the consumer subclass overrides ``Consumer.start``/``run``.)
"""

from __future__ import annotations

import datetime

from huey import Huey
from huey.api import Task
from huey.registry import Message
from huey.utils import normalize_expire_time


class HueyHooks(Huey):
    """Huey with its private retry hook turned into a public method of qrq's."""

    def _requeue_task(self, task, timestamp, retry_eta=None):
        # huey calls this when a task with retries left raised; qrq schedules the
        # retry itself (backoff with jitter, the job record in the same commit).
        self.requeue_for_retry(task, timestamp, retry_eta)

    def requeue_for_retry(self, task, timestamp, retry_eta=None) -> None:
        raise NotImplementedError

    def _timeout_context(self, task):
        # huey enters this inside its try block, with the task in flight, right before
        # the task's function runs: what is raised here ends the run like the task's own.
        self.before_run(task)
        return super()._timeout_context(task)

    def before_run(self, task) -> None:
        """Called as *task* starts, already in flight."""

    def emit(self, signal: str, task, *args) -> None:
        """Send *signal* to the receivers connected with ``huey.signal(...)``."""
        self._emit(signal, task, *args)

    def now(self) -> datetime.datetime:
        """The clock huey compares etas with (naive UTC when ``utc=True``)."""
        return self._get_timestamp()

    def registered_class(self, name: str) -> type | None:
        """The task class huey registered under *name* (``"qrq.pdf.generate"``), if any."""
        return self._registry._registry.get(name)

    def periodic_tasks(self) -> list:
        """An instance of each registered periodic task."""
        return list(self._registry.periodic_tasks)

    def task_from_message(self, message: Message):
        """The task *message* describes: of its registered class, or of a stand-in
        class of the same name when this process has not imported it (the web app)."""
        if self.registered_class(message.name) is not None:
            return self._registry.create_task(message)
        module, _, name = message.name.partition(".")
        stand_in = type(name or module, (Task,), {"__module__": module})
        return stand_in(message.args, message.kwargs, message.id, message.eta,
                        message.retries, message.retry_delay, message.priority,
                        message.expires, expires_resolved=message.expires_resolved,
                        timeout=message.timeout)


def message(name: str, args: tuple, kwargs: dict, *, id: str, eta=None, priority=None,
            retries=None, retry_delay=None, expires=None, timeout=None,
            utc: bool = True) -> Message:
    """The message huey's consumer turns into a task of registered *name*.

    Unset fields stay None: the consumer's task class fills in its defaults
    (retries, delay, backoff, time limit), so the submitting process needs only
    the name.
    """
    return Message(id=id, name=name, eta=eta, retries=retries, retry_delay=retry_delay,
                   priority=priority, args=args, kwargs=kwargs, expires=expires,
                   expires_resolved=normalize_expire_time(expires, utc) if expires else None,
                   timeout=timeout)


def fresh_attempt(stored: Message, utc: bool = True) -> Message:
    """*stored* as a first attempt again: the task's own retries and delay, no eta,
    a new expiry window."""
    return stored._replace(
        retries=None, retry_delay=None, retry_backoff=None, eta=None,
        expires_resolved=normalize_expire_time(stored.expires, utc) if stored.expires else None)
