"""Dead letters: the bulk actions on jobs that ended badly or long ago, and on
jobs picked by hand (the dashboard's selected rows).

The dashboard, the admin API and the CLI all call these functions, so a bulk
retry and a purge behave the same from every door: a retry-all goes on past a job
that cannot run again and reports it with the reason, and a purge checks its age
and status the same way. Each bulk action runs the one single-job operation
(``huey.retry``, ``huey.cancel``, :func:`retention.delete_ended`) over its ids.
"""

from __future__ import annotations

from typing import Any

from qrq.artifacts import ArtifactStore
from qrq.errors import Conflict, NotFound, ValidationError
from qrq.queue import stats
from qrq.queue.catalog import check_job_type
from qrq.queue.jobs import ACTIVE, ENDED
from qrq.queue.retention import CHUNK, ArtifactListing, delete_ended, parse_age, purge_jobs

# A bulk retry stops here; what is left is retried by running it again.
MAX_BULK = 10_000
# Jobs a bulk retry queues per transaction: one each made 5,000 take seconds on SQLite
# (a commit each), and a transaction of thousands would hold the write lock as long.
RETRY_CHUNK = 250
# The statuses each action of the selected-jobs form applies to.
RETRYABLE = ("failed", "canceled", "expired")
ACTIONS = {"retry": RETRYABLE, "cancel": ACTIVE, "discard": ENDED}


def retry_failed(huey, job_type: str | None = None,
                 limit: int = MAX_BULK) -> dict[str, list[Any]]:
    """Re-run every failed job (of *job_type*, or all), newest first.

    Returns ``{"retried": [job id, ...], "skipped": [{"job_id", "reason"}, ...]}``:
    a job that cannot be retried (its payload fails signature verification, it
    changed state meanwhile, ...) is listed with the reason, never raised.
    """
    if job_type is not None:
        check_job_type(job_type)
    found, _ = stats.search_jobs(huey.storage, status="failed", job_type=job_type, limit=limit)
    report = retry_jobs(huey, [job["id"] for job in found])
    return {"retried": report["done"], "skipped": report["skipped"]}


def retry_jobs(huey, job_ids: list[str]) -> dict[str, list[Any]]:
    """Re-run each of *job_ids* that ended badly (as ``huey.retry`` does), in the given
    order, :data:`RETRY_CHUNK` of them per transaction.

    Returns ``{"done": [job id, ...], "skipped": [{"job_id", "reason"}, ...]}``.
    """
    done, skipped, queued_ids = [], [], set()
    for start in range(0, len(job_ids), RETRY_CHUNK):
        chunk = job_ids[start:start + RETRY_CHUNK]
        found = {job["id"]: job for job in stats.jobs_by_id(huey.storage, chunk)}
        entries = []
        for job_id in chunk:
            try:
                entries.append(huey.retry_entry(job_id, found.get(job_id)))
            except (Conflict, NotFound) as exc:
                skipped.append({"job_id": job_id, "reason": exc.message})
        for entry, queued in zip(entries, huey.storage.enqueue_retries(entries), strict=True):
            job_id = entry[2]
            if queued:
                done.append(job_id)
                queued_ids.add(job_id)
            else:
                skipped.append({"job_id": job_id, "reason": "listed more than once; it runs "
                                "once" if job_id in queued_ids else f"job {job_id} changed "
                                "state; try again"})
    return {"done": done, "skipped": skipped}


def cancel_jobs(huey, job_ids: list[str]) -> dict[str, list[Any]]:
    """Cancel each of *job_ids* that has not ended (``huey.cancel``: a queued job at
    once, a running one at its next progress report); same report as :func:`retry_jobs`."""
    done, skipped = [], []
    found = {job["id"]: job for job in stats.jobs_by_id(huey.storage, job_ids)}
    for job_id in job_ids:
        job = found.get(job_id)
        if job is None:
            skipped.append({"job_id": job_id, "reason": "no such job"})
        elif job["status"] in ENDED:
            skipped.append({"job_id": job_id, "reason": f"already {job['status']}"})
        else:
            huey.cancel(job_id)
            done.append(job_id)
    return {"done": done, "skipped": skipped}


def discard_jobs(storage, store: ArtifactStore, job_ids: list[str]) -> dict[str, list[Any]]:
    """Delete each of *job_ids* that has ended, with its files and result; a job still
    queued or running is skipped (cancel it first). Same report as :func:`retry_jobs`."""
    deleted: set[str] = set()
    listing = ArtifactListing(store)
    for start in range(0, len(job_ids), CHUNK):
        deleted.update(delete_ended(storage, listing, job_ids[start:start + CHUNK]))
    left = {job["id"]: job["status"]
            for job in stats.jobs_by_id(storage, [i for i in job_ids if i not in deleted])}
    skipped = [{"job_id": job_id,
                "reason": f"{left[job_id]}: only ended jobs can be discarded (cancel it first)"
                if job_id in left else "no such job"}
               for job_id in job_ids if job_id not in deleted]
    return {"done": [job_id for job_id in job_ids if job_id in deleted], "skipped": skipped}


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
    return describe(f"{len(report['retried'])} failed job(s) queued again", report)


def describe(line: str, report: dict[str, list[Any]]) -> str:
    """*line*, then which jobs of *report* were skipped and why (the first five)."""
    if report["skipped"]:
        reasons = "; ".join(f"{s['job_id']}: {s['reason']}" for s in report["skipped"][:5])
        more = len(report["skipped"]) - 5
        line += f", {len(report['skipped'])} skipped ({reasons}" + (
            f"; and {more} more)" if more > 0 else ")")
    return line + "."
