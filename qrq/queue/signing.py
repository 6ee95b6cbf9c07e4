"""The queue's signing key: a process must use the key its queued jobs were signed with.

Queue payloads are signed with the secret key (``QRQ_SECRET_KEY`` or
``<data>/secret.key``), and a worker refuses one whose signature does not match:
that job fails ("payload signature mismatch") and cannot be retried. A host started
with another key (a new ``QRQ_SECRET_KEY`` for an installation whose
``secret.key`` signed what waits, or a host whose settings differ from the others')
would fail every job waiting. So each process, as it opens the queue, checks its key
against the oldest jobs waiting and refuses to start when it verifies none of them.
"""

from __future__ import annotations

from huey.serializer import SignedSerializer

from qrq.errors import Conflict

SAMPLE = 5  # oldest waiting payloads looked at: one verified is enough


class KeySerializer(SignedSerializer):
    """huey's signed pickles, able to tell whether a payload was signed with its key."""

    def verifies(self, data: bytes) -> bool:
        try:
            self._unsign(bytes(data))
        except ValueError:
            return False
        return True


def check_key(storage, serializer: KeySerializer) -> None:
    """Refuse a key that verifies none of the oldest jobs waiting (several, so that
    the rows one misconfigured host queued cannot lock the others out).

    :raises Conflict: jobs wait, and none of those looked at was signed with this key.
    """
    waiting = storage.oldest_payloads(SAMPLE)
    if waiting and not any(serializer.verifies(data) for data in waiting):
        raise Conflict(
            "the secret key in effect (QRQ_SECRET_KEY, else <data>/secret.key) did not "
            "sign the jobs waiting in the queue, which would all fail (payload signature "
            "mismatch): use the key they were queued with, the same on every host (for "
            "an installation that grew, its <data>/secret.key)")
