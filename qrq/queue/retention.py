"""Retention: delete what old jobs leave behind, so the data directory stays bounded.

Job records, their artifacts, stale revoke keys and the rows of consumers that
stopped long ago. SQLite reuses the freed pages, so the queue file stops growing
once old rows leave as fast as new ones arrive.
"""

from __future__ import annotations

import re
import time
from collections import defaultdict

from qrq.artifacts import ArtifactStore, identity, open_store
from qrq.queue import audit
from qrq.queue.admission import expire_keys
from qrq.queue.attempts import delete_attempts
from qrq.queue.jobs import ENDED
from qrq.queue.schema import JOB_DEPENDENTS

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])", re.ASCII)  # not "٣d"
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
CHUNK = 500


def parse_age(text: str) -> float:
    """``"30d"``, ``"12h"``, ``"90m"`` ... as seconds.

    :raises ValueError: not NUMBER followed by one of s, m, h, d, w.
    """
    match = _DURATION.fullmatch(text.strip().lower())
    if not match:
        raise ValueError(f"{text!r} is not an age like 30d, 12h, 90m")
    return float(match[1]) * _UNIT_SECONDS[match[2]]


def purge_jobs(storage, store: ArtifactStore, older_than: float,
               statuses: tuple[str, ...] = ENDED, now: float | None = None) -> int:
    """Delete jobs in *statuses* that ended more than *older_than* seconds ago.

    Their artifacts (``<job_id>*`` in *store*) and revoke keys go with them.
    Running and queued jobs are never touched. Returns how many jobs went.
    """
    cutoff = (now or time.time()) - older_than
    marks = ",".join("?" * len(statuses))
    purged = 0
    listing = ArtifactListing(store)
    while True:
        ids = [job_id for job_id, in storage.sql(
            f"select id from job where status in ({marks}) and finished_at < ? limit ?",
            (*statuses, cutoff, CHUNK), results=True)]
        if not ids:
            return purged
        purged += len(delete_ended(storage, listing, ids))


class ArtifactListing:
    """A store's artifacts by job id, listed once on first use: one pass over a
    directory, one request per 1,000 objects on S3, however many chunks are deleted."""

    def __init__(self, store: ArtifactStore) -> None:
        self.store = store
        self._by_job: dict[str, list[str]] | None = None

    def take(self, job_ids: list[str]) -> list[str]:
        """The names of *job_ids*' artifacts (``<job_id>*``), forgotten once taken."""
        if self._by_job is None:
            self._by_job = defaultdict(list)
            for found in self.store.list():
                self._by_job[found.name[:36]].append(found.name)
        return [name for job_id in job_ids for name in self._by_job.pop(job_id, ())]


def delete_ended(storage, listing: ArtifactListing, job_ids: list[str]) -> list[str]:
    """Delete those of *job_ids* (at most :data:`CHUNK`) that have ended, with their
    artifacts and results; returns the ids deleted. Unfinished jobs are never touched.

    The artifacts go first: a store out of reach raises
    :class:`~qrq.errors.StoreUnavailable` and keeps the records for the next try.
    """
    id_marks = ",".join("?" * len(job_ids))
    ended = [job_id for job_id, in storage.sql(
        f"select id from job where id in ({id_marks}) and finished_at is not null", job_ids,
        results=True)]
    if not ended:
        return []
    listing.store.delete(listing.take(ended))
    with storage.db(commit=True) as curs:
        curs.execute(f"delete from job where id in ({','.join('?' * len(ended))}) "
                     "and finished_at is not null returning id", ended)
        ids = [job_id for job_id, in curs.fetchall()]
        if ids:
            marks = ",".join("?" * len(ids))
            for table, column in JOB_DEPENDENTS:  # what belongs to the job goes with it
                curs.execute(f"delete from {table} where {column} in ({marks})", ids)
            delete_attempts(curs, ids)
            curs.execute(f"delete from kv where queue = ? and key in ({marks})",
                         (storage.name, *(f"r:{job_id}" for job_id in ids)))
    return ids


def purge_stale(storage, store: ArtifactStore, now: float | None = None,
                grace: float = 86400) -> dict[str, int]:
    """Delete leftovers no job points to: revoke keys and artifacts of purged jobs,
    what unfinished writes left, and consumer rows silent for more than *grace*
    seconds."""
    now = now or time.time()
    known = {job_id for job_id, in storage.sql("select id from job", results=True)}
    keys = [key for key, in storage.sql("select key from kv where queue = ? and key like 'r:%'",
                                        (storage.name,), results=True) if key[2:] not in known]
    for i in range(0, len(keys), CHUNK):
        chunk = keys[i:i + CHUNK]
        storage.sql(f"delete from kv where queue = ? and key in ({','.join('?' * len(chunk))})",
                    (storage.name, *chunk), commit=True)
    orphans = [found.name for found in store.list() if found.name[:36] not in known
               and found.mtime < now - grace and found.name != identity.MARKER]
    store.delete(orphans)
    swept = store.sweep(now - grace)
    with storage.db(commit=True) as curs:
        curs.execute("delete from consumer where heartbeat_at < ?", (now - grace,))
        consumers = curs.rowcount
    return {"revoke_keys": len(keys), "orphan_artifacts": len(orphans) + swept,
            "consumers": consumers}


def forget_consumers(storage) -> int:
    """Delete every consumer row: after a restore of the queue, whose rows are the old
    system's consumers at the time of the snapshot (a restore needs them stopped)."""
    with storage.db(commit=True) as curs:
        curs.execute("delete from consumer")
        return curs.rowcount


def apply_retention(storage, settings, now: float | None = None) -> dict[str, int]:
    """The periodic clean-up: finished jobs after ``retain_finished_days``, failed,
    canceled and expired ones after ``retain_failed_days``, then leftovers, and audit
    rows after the longer of the two."""
    day = 86400
    store = open_store(settings)
    report = {
        "finished": purge_jobs(storage, store, settings.retain_finished_days * day,
                               ("finished",), now),
        "failed": purge_jobs(storage, store, settings.retain_failed_days * day,
                             ("failed", "canceled", "expired"), now),
    }
    report.update(purge_stale(storage, store, now))
    report["idempotency_keys"] = expire_keys(storage, now)
    # The audit log is kept as long as any ended job it may name.
    kept = max(settings.retain_finished_days, settings.retain_failed_days) * day
    report["audit"] = audit.purge_before(storage, (now or time.time()) - kept)
    return report
