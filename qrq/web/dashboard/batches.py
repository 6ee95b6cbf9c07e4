"""A batch job's items on its job page: the ok/failed/pending counts and success
rate, a filtered page of items with their errors and codes, and re-running the
failed items as a new batch (the same operation as the API's retry-failed)."""

from __future__ import annotations

from typing import Any

from flask import flash, redirect, request, url_for

from qrq import batch
from qrq.appdb.models import User
from qrq.batch.submit import enqueue_retry
from qrq.errors import Conflict, NotFound, ValidationError
from qrq.queue import audit, huey, jobs
from qrq.web.batch import item_code_response
from qrq.web.dashboard.blueprint import bp
from qrq.web.dashboard.session import admin_page
from qrq.web.params import int_arg

ITEMS_PER_PAGE = 50
PAYLOAD_CHARS = 80


def _batch_of(job_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    job = jobs.get(huey.storage, job_id)
    found = batch.get_batch(huey.storage, job["id"]) if job and job["type"] == "batch" \
        else None
    if found is None:
        raise NotFound(f"batch {job_id[:64]} not found")
    return job, found


def batch_view(job: dict[str, Any]) -> dict[str, Any] | None:
    """What the job page shows of a batch (None for any other job): counts, success
    rate and one page of items, filtered by the ``items`` and ``page`` arguments."""
    found = batch.get_batch(huey.storage, job["id"]) if job["type"] == "batch" else None
    if found is None:
        return None
    status = request.args.get("items") or None
    if status is not None and status not in batch.ITEM_STATUSES:
        raise ValidationError(f"must be one of {', '.join(batch.ITEM_STATUSES)}",
                              field="items")
    page = int_arg("page", 1, 1, 10**6)
    formats = batch.formats_of(found["options"])
    rows, matching = batch.list_items(huey.storage, job["id"], found["total"], status, page,
                                      ITEMS_PER_PAGE, formats)
    for row in rows:
        row["short"] = row["data"] if len(row["data"]) <= PAYLOAD_CHARS \
            else row["data"][:PAYLOAD_CHARS - 1] + "…"
    done = found["completed"] + found["failed"]
    return {"counts": {"ok": found["completed"], "failed": found["failed"],
                       "pending": max(0, found["total"] - done)},
            "total": found["total"], "rate": 100 * found["completed"] / done if done else None,
            "parent_id": found["parent_id"], "retries": batch.retries(huey.storage, job["id"]),
            "rows": rows, "matching": matching,
            "filter": status, "page": page, "formats": formats,
            "pages": max(1, -(-matching // ITEMS_PER_PAGE))}


def failed_items(rows: list[dict[str, Any]]) -> dict[str, int]:
    """How many items failed in each listed batch job that has failed items."""
    found = {row["id"]: batch.counts(huey.storage, row["id"]).get("failed", 0)
             for row in rows if row["type"] == "batch"}
    return {job_id: failed for job_id, failed in found.items() if failed}


@bp.get("/jobs/<job_id>/items/<int:idx>.<any(svg, png):fmt>")
@admin_page
def batch_item_code(user: User, job_id: str, idx: int, fmt: str):
    """One ok item's code, the file the batch's ZIP holds for it."""
    job, found = _batch_of(job_id)
    return item_code_response(job["id"], idx, fmt, found["options"])


@bp.post("/jobs/<job_id>/retry-failed-items")
@admin_page
def retry_failed_items(user: User, job_id: str):
    """Queue the batch's failed items again, as a new batch kept by the same owner."""
    job, found = _batch_of(job_id)
    try:
        new_id, count = enqueue_retry(job["id"], found["owner_id"])
    except Conflict as exc:
        flash(exc.message, "error")
        return redirect(url_for("admin.job_detail", job_id=job["id"]))
    audit.record(huey.storage, user.name, "batch.retry_failed_items", job_ids=[job["id"]],
                 detail={"new_batch": new_id, "items": count})
    flash(f"Queued {count} failed item(s) of batch {job['id']} again as batch {new_id}.")
    return redirect(url_for("admin.job_detail", job_id=new_id))
