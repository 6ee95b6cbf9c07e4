"""What a new job must pass before it is written: its owner's active-job quota and
its ``Idempotency-Key``.

Both are checked inside the enqueue's write transaction (``begin exclusive`` on SQLite,
a per-owner advisory lock on PostgreSQL: see the storage's ``_lock_owner`` and
:mod:`qrq.queue.postgres_submit`), so
concurrent submits cannot all see room under the quota, and concurrent retries
of one request under one key create one job. A key is kept for 24 hours, per
owner; a repeated key with another request body is refused (422), as the IETF
draft "The Idempotency-Key HTTP Header Field" specifies.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

from qrq.errors import TooManyJobs, ValidationError
from qrq.queue.jobs import count_active

KEY_SECONDS = 24 * 3600
MAX_KEY_LENGTH = 255
HEADER = "Idempotency-Key"


@dataclass(frozen=True)
class Admission:
    """The checks one submit asks for; None skips a check."""

    max_active: int | None = None
    idempotency_key: str | None = None
    fingerprint: str | None = None
    # ``(job type, limit)``: most unfinished jobs of that type the owner may have, so one
    # user's many costly jobs (analytics reports) do not hold up everyone's.
    type_limit: tuple[str, int] | None = None


def fingerprint(body: Any) -> str:
    """A digest of a request body, the same for the same JSON whatever its key order."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def check_key(key: str | None) -> str | None:
    """A well-formed key (1-255 visible ASCII characters) or None when absent.

    :raises ValidationError: the header is empty, too long or not visible ASCII.
    """
    if key is None:
        return None
    if not 0 < len(key) <= MAX_KEY_LENGTH or not all(" " < c <= "~" for c in key):
        raise ValidationError(f"must be 1 to {MAX_KEY_LENGTH} visible ASCII characters",
                              field=HEADER)
    return key


def find_replay(curs, owner_id: int | None, key: str, digest: str,
                now: float | None = None) -> str | None:
    """The job a live *key* of *owner_id* created, or None.

    :raises ValidationError: the key was used with another request body.
    """
    now = time.time() if now is None else now
    curs.execute("select id, request_hash from job where owner_id is not distinct from ? "
                 "and idempotency_key = ? and created_at >= ?",
                 (owner_id, key, now - KEY_SECONDS))
    row = curs.fetchone()
    if row is None:
        return None
    if row[1] != digest:
        raise ValidationError(f"was already used with a different request body (job "
                              f"{row[0]}); use a new key for a new request", field=HEADER)
    return row[0]


def admit(curs, owner_id: int | None, admission: Admission | None,
          now: float | None = None) -> str | None:
    """Check *admission* inside the enqueue's transaction.

    Returns the existing job's id when the idempotency key was seen (nothing
    new may be written then), else None.

    :raises TooManyJobs: the owner is at the quota. :raises ValidationError:
        the key was used with another request body.
    """
    if admission is None:
        return None
    now = time.time() if now is None else now
    if admission.idempotency_key is not None:
        replay = find_replay(curs, owner_id, admission.idempotency_key,
                             admission.fingerprint, now)
        if replay is not None:
            return replay
        # A key past its 24 h may be used again: free it from its old job.
        curs.execute("update job set idempotency_key = null where "
                     "owner_id is not distinct from ? and idempotency_key = ?",
                     (owner_id, admission.idempotency_key))
    _check_quota(curs, owner_id, admission.max_active, admission.type_limit)
    return None


def _check_quota(curs, owner_id: int | None, max_active: int | None,
                 type_limit: tuple[str, int] | None = None) -> None:
    if owner_id is None:
        return
    if max_active is not None and count_active(curs, owner_id) >= max_active:
        raise quota_exceeded(max_active)
    if type_limit is not None and count_active(curs, owner_id, type_limit[0]) >= type_limit[1]:
        job_type, limit = type_limit
        raise TooManyJobs(f"you have {limit} {job_type} jobs queued or running, the most "
                          "allowed of that type; wait for one to finish")


def quota_exceeded(max_active: int) -> TooManyJobs:
    """The error of a submit refused at *max_active* unfinished jobs."""
    return TooManyJobs(f"you have {max_active} jobs queued or running, the most allowed; "
                       "wait for some to finish")


def check_quota(storage, owner_id: int | None, max_active: int | None,
                type_limit: tuple[str, int] | None = None) -> None:
    """Refuse early, before any work on the request; the enqueue checks again atomically.

    :raises TooManyJobs: *owner_id* has *max_active* unfinished jobs, or as many of a
        type as *type_limit* allows.
    """
    with storage.db() as curs:
        _check_quota(curs, owner_id, max_active, type_limit)


def record_key(curs, job_id: str, admission: Admission | None) -> None:
    """Store the key and body digest on the new job (after :func:`admit` let it in)."""
    if admission is not None and admission.idempotency_key is not None:
        curs.execute("update job set idempotency_key = ?, request_hash = ? where id = ?",
                     (admission.idempotency_key, admission.fingerprint, job_id))


def expire_keys(storage, now: float | None = None) -> int:
    """Forget the idempotency keys older than 24 h (retention); return how many."""
    now = time.time() if now is None else now
    with storage.db(commit=True) as curs:
        curs.execute("update job set idempotency_key = null, request_hash = null "
                     "where idempotency_key is not null and created_at < ?",
                     (now - KEY_SECONDS,))
        return curs.rowcount


def lookup(storage, owner_id: int | None, key: str, digest: str) -> str | None:
    """Read-only :func:`find_replay`, for answering a repeated request before any work."""
    with storage.db() as curs:
        return find_replay(curs, owner_id, key, digest)
