"""The queue's signing key: every process must use the key the queue was set up with.

Queue payloads are signed with the secret key (``QRQ_SECRET_KEY`` or
``<data>/secret.key``), and a worker refuses one whose signature does not match:
that job fails ("payload signature mismatch"). A host started with another key (a
new ``QRQ_SECRET_KEY`` for an installation whose ``secret.key`` signed what waits,
or a host whose settings differ from the others') would fail every job it takes,
and the jobs it queues would fail on every other host.

So the queue records its key's fingerprint (a one-way name, ``queue_key``), written
by the first process that opens it, and each process refuses to start with another
key, naming the host that recorded it. A queue made before the record was kept is
checked against its oldest waiting jobs instead, and then recorded. Replacing the
key on purpose (a leaked key) is ``qrq key adopt``.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any

from huey.serializer import SignedSerializer

from qrq.errors import Conflict, Unavailable
from qrq.queue import first_record

SAMPLE = 5  # oldest waiting payloads looked at: one verified is enough


class KeySerializer(SignedSerializer):
    """huey's signed pickles, able to tell whether a payload was signed with its key."""

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.secret.decode())

    def verifies(self, data: bytes) -> bool:
        try:
            self._unsign(bytes(data))
        except ValueError:
            return False
        return True


class WrongKey(Conflict):
    """The key in effect is not the queue's."""

    code = "wrong_secret_key"


def fingerprint(key: str) -> str:
    """A short, one-way name for a key: it tells keys apart without showing them (the
    same name backup manifests record)."""
    return hmac.new(key.encode(), b"qrq backup key fingerprint", hashlib.sha256).hexdigest()[:16]


def recorded(storage) -> dict[str, Any] | None:
    """The queue's key as recorded: ``{"fingerprint", "host", "recorded_at"}``, or None
    (a queue made before the record was kept, or never opened)."""
    return first_record.read(storage, "queue_key", ("fingerprint",))


def refusal(storage, serializer: KeySerializer) -> str | None:
    """Why a process with *serializer*'s key must not start on this queue (None: it
    may); writes nothing. Without a record, the key must verify one of the oldest
    jobs waiting or scheduled (several, so that the rows one misconfigured host queued
    cannot lock the others out)."""
    return _refusal(storage, serializer, recorded(storage))


def _refusal(storage, serializer: KeySerializer, queue: dict[str, Any] | None) -> str | None:
    mine = serializer.fingerprint
    if queue is None:
        waiting = _waiting(storage, SAMPLE)
        if waiting and not any(serializer.verifies(data) for data in waiting):
            return ("the secret key in effect (QRQ_SECRET_KEY, else <data>/secret.key) "
                    "did not sign the jobs waiting in the queue, which would all fail "
                    "(payload signature mismatch): use the key they were queued with, the "
                    "same on every host (for an installation that grew, its "
                    "<data>/secret.key)")
        return None
    if queue["fingerprint"] == mine:
        return None
    return (f"the secret key in effect (QRQ_SECRET_KEY, else <data>/secret.key; "
            f"fingerprint {mine}) is not this queue's (fingerprint {queue['fingerprint']}, "
            f"recorded by {first_record.by_whom(queue)}): jobs signed with one fail "
            "on hosts with the other. Set QRQ_SECRET_KEY to the key the other hosts use "
            "(on a new host, <data>/secret.key was just made up); `qrq key show` compares "
            "them. Only after replacing the key on purpose, with every process stopped: "
            "`qrq key adopt`")


def check_key(storage, serializer: KeySerializer) -> None:
    """Refuse a key other than the queue's (:func:`refusal`); record it when the queue
    has no record yet.

    :raises WrongKey: with the refusal's reason.
    """
    queue = recorded(storage)
    reason = _refusal(storage, serializer, queue)
    if reason is None and queue is None:
        # A process starting at the same time may have recorded its own first.
        queue = first_record.write(storage, "queue_key", {"fingerprint": serializer.fingerprint})
        reason = _refusal(storage, serializer, queue)
    if reason is not None:
        raise WrongKey(reason)


def unverified(storage, serializer: KeySerializer, limit: int) -> tuple[int, int]:
    """How many of the *limit* oldest waiting and of the *limit* first scheduled jobs
    this key does not verify, and how many were looked at."""
    waiting = _waiting(storage, limit)
    return sum(not serializer.verifies(data) for data in waiting), len(waiting)


def _waiting(storage, limit: int) -> list[bytes]:
    """The payloads of the *limit* oldest waiting and the *limit* first scheduled jobs."""
    return storage.oldest_payloads(limit) + storage.scheduled_items(limit)


def adopt(storage, serializer: KeySerializer) -> dict[str, Any] | None:
    """Record the key in effect as the queue's (after a deliberate change of key);
    return the record it replaced (None if there was none)."""
    before = recorded(storage)
    first_record.write(storage, "queue_key", {"fingerprint": serializer.fingerprint},
                       replace=True)
    return before


class KeyWatch:
    """The key in effect checked against the queue's again, at most every *seconds*,
    before a job is queued: a process started before ``qrq key adopt`` must not queue
    jobs that no consumer can verify (a consumer stops at its next heartbeat)."""

    def __init__(self, seconds: float = 5.0):
        self.seconds, self.next_check, self.checked = seconds, 0.0, None

    def check(self, storage, serializer: KeySerializer) -> None:
        """:raises Unavailable: the queue's key was replaced since this process started."""
        now = time.monotonic()
        if now < self.next_check and serializer is self.checked:  # (a new one: reopened)
            return
        reason = refusal(storage, serializer)
        if reason is not None:
            raise Unavailable("this server cannot queue jobs: its secret key is no longer "
                              "the queue's (it must be restarted with the new one)")
        self.next_check, self.checked = now + self.seconds, serializer
