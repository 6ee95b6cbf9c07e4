"""Retention: delete what old jobs leave behind, so the data directory stays bounded.

Job records, their artifacts, stale revoke keys and the rows of consumers that
stopped long ago. SQLite reuses the freed pages, so the queue file stops growing
once old rows leave as fast as new ones arrive.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from qrq.queue.admission import expire_keys
from qrq.queue.attempts import delete_attempts
from qrq.queue.jobs import ENDED
from qrq.queue.schema import JOB_DEPENDENTS

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
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


def purge_jobs(storage, artifacts_dir: Path, older_than: float,
               statuses: tuple[str, ...] = ENDED, now: float | None = None) -> int:
    """Delete jobs in *statuses* that ended more than *older_than* seconds ago.

    Their artifacts (``<artifacts>/<job_id>*``) and revoke keys go with them.
    Running and queued jobs are never touched. Returns how many jobs went.
    """
    cutoff = (now or time.time()) - older_than
    marks = ",".join("?" * len(statuses))
    purged = 0
    while True:
        ids = [job_id for job_id, in storage.sql(
            f"select id from job where status in ({marks}) and finished_at < ? limit ?",
            (*statuses, cutoff, CHUNK), results=True)]
        if not ids:
            return purged
        purged += len(delete_ended(storage, artifacts_dir, ids))


def delete_ended(storage, artifacts_dir: Path, job_ids: list[str]) -> list[str]:
    """Delete those of *job_ids* (at most :data:`CHUNK`) that have ended, with their
    artifacts and results; returns the ids deleted. Unfinished jobs are never touched."""
    id_marks = ",".join("?" * len(job_ids))
    with storage.db(commit=True) as curs:
        curs.execute(f"delete from job where id in ({id_marks}) and finished_at is not null "
                     "returning id", job_ids)
        ids = [job_id for job_id, in curs.fetchall()]
        if ids:
            marks = ",".join("?" * len(ids))
            for table, column in JOB_DEPENDENTS:  # what belongs to the job goes with it
                curs.execute(f"delete from {table} where {column} in ({marks})", ids)
            delete_attempts(curs, ids)
            curs.execute(f"delete from kv where queue = ? and key in ({marks})",
                         (storage.name, *(f"r:{job_id}" for job_id in ids)))
    _delete_artifacts(artifacts_dir, set(ids))
    return ids


def _delete_artifacts(artifacts_dir: Path, job_ids: set[str]) -> None:
    """Delete ``<artifacts>/<job_id>*`` for *job_ids*, in one pass over the directory."""
    if not artifacts_dir.is_dir():
        return
    for path in artifacts_dir.iterdir():
        if path.name[:36] in job_ids:
            path.unlink(missing_ok=True)


def purge_stale(storage, artifacts_dir: Path, now: float | None = None,
                grace: float = 86400) -> dict[str, int]:
    """Delete leftovers no job points to: revoke keys and artifacts of purged jobs,
    and consumer rows silent for more than *grace* seconds."""
    now = now or time.time()
    known = {job_id for job_id, in storage.sql("select id from job", results=True)}
    keys = [key for key, in storage.sql("select key from kv where queue = ? and key like 'r:%'",
                                        (storage.name,), results=True) if key[2:] not in known]
    for i in range(0, len(keys), CHUNK):
        chunk = keys[i:i + CHUNK]
        storage.sql(f"delete from kv where queue = ? and key in ({','.join('?' * len(chunk))})",
                    (storage.name, *chunk), commit=True)
    orphans = 0
    if artifacts_dir.is_dir():
        for path in artifacts_dir.iterdir():
            job_id = path.name[:36]
            try:  # a render's temporary file may be renamed away meanwhile
                old = path.stat().st_mtime < now - grace
            except FileNotFoundError:
                continue
            if job_id not in known and old:
                path.unlink(missing_ok=True)
                orphans += 1
    with storage.db(commit=True) as curs:
        curs.execute("delete from consumer where heartbeat_at < ?", (now - grace,))
        consumers = curs.rowcount
    return {"revoke_keys": len(keys), "orphan_artifacts": orphans, "consumers": consumers}


def apply_retention(storage, settings, now: float | None = None) -> dict[str, int]:
    """The periodic clean-up: finished jobs after ``retain_finished_days``, failed,
    canceled and expired ones after ``retain_failed_days``, then leftovers."""
    day = 86400
    report = {
        "finished": purge_jobs(storage, settings.artifacts_dir,
                               settings.retain_finished_days * day, ("finished",), now),
        "failed": purge_jobs(storage, settings.artifacts_dir,
                             settings.retain_failed_days * day,
                             ("failed", "canceled", "expired"), now),
    }
    report.update(purge_stale(storage, settings.artifacts_dir, now))
    report["idempotency_keys"] = expire_keys(storage, now)
    return report
