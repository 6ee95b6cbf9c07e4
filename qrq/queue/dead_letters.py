"""Dead letters: the bulk actions on jobs that ended badly or long ago.

The dashboard, the admin API and the CLI all call these two functions, so a bulk
retry and a purge behave the same from every door: a retry-all goes on past a job
that cannot run again and reports it with the reason, and a purge checks its age
and status the same way.
"""

from __future__ import annotations

from typing import Any

from qrq.artifacts import ArtifactStore
from qrq.errors import Conflict, NotFound, ValidationError
from qrq.queue import stats
from qrq.queue.jobs import ENDED
from qrq.queue.retention import parse_age, purge_jobs

# A bulk retry stops here; what is left is retried by running it again.
MAX_BULK = 10_000


def retry_failed(huey, job_type: str | None = None,
                 limit: int = MAX_BULK) -> dict[str, list[Any]]:
    """Re-run every failed job (of *job_type*, or all), newest first.

    Returns ``{"retried": [job id, ...], "skipped": [{"job_id", "reason"}, ...]}``:
    a job that cannot be retried (its payload fails signature verification, it
    changed state meanwhile, ...) is listed with the reason, never raised.
    """
    if job_type is not None and (not isinstance(job_type, str) or len(job_type) > 40):
        raise ValidationError("must be a job type (a string of at most 40 characters)",
                              field="type")
    found, _ = stats.search_jobs(huey.storage, status="failed", job_type=job_type, limit=limit)
    retried, skipped = [], []
    for job_id in (job["id"] for job in found):
        try:
            huey.retry(job_id)
        except (Conflict, NotFound) as exc:
            skipped.append({"job_id": job_id, "reason": exc.message})
        else:
            retried.append(job_id)
    return {"retried": retried, "skipped": skipped}


def purge_ended(storage, store: ArtifactStore, older_than: str = "30d",
                status: str | None = None) -> int:
    """Delete ended jobs (records and files) that ended more than *older_than* ago
    (``"30d"``, ``"12h"``), of one *status* or every ended one; returns how many.

    :raises ValidationError: a bad age (field ``older_than``) or status (``status``).
    """
    try:
        seconds = parse_age(str(older_than)[:20])
    except ValueError as exc:
        raise ValidationError(str(exc), field="older_than") from None
    if status is not None and status not in ENDED:
        raise ValidationError(f"must be one of {', '.join(ENDED)}", field="status")
    return purge_jobs(storage, store, seconds, (status,) if status else ENDED)


def describe_retry(report: dict[str, list[Any]]) -> str:
    """One line for people: how many were queued again, and which were skipped why."""
    line = f"{len(report['retried'])} failed job(s) queued again"
    if report["skipped"]:
        reasons = "; ".join(f"{s['job_id']}: {s['reason']}" for s in report["skipped"][:5])
        more = len(report["skipped"]) - 5
        line += f", {len(report['skipped'])} skipped ({reasons}" + (
            f"; and {more} more)" if more > 0 else ")")
    return line + "."
