"""Submitting batches: store a checked batch and queue its job; re-run a batch's
failed items as a new batch. Called by the web app and the CLI."""

from __future__ import annotations

import uuid

from qrq import batch, webhooks
from qrq.errors import Conflict
from qrq.queue import Admission, huey, jobs, submit

TASK = "batch.generate"


def _params(request: batch.BatchRequest, parent_id: str | None = None) -> dict:
    return {"total_items": len(request.items), "template_ids": request.template_ids[:50],
            "options": request.options, "parent_job_id": parent_id}


def enqueue_batch(request: batch.BatchRequest, job_id: str, owner_id: int | None,
                  admission: Admission | None = None) -> str:
    """Store a checked batch under *job_id* (the id its payloads were made with) and
    queue it; return the job id (an earlier job's when *admission*'s idempotency
    key was seen; the new rows are then dropped)."""
    batch.purge_orphans(huey.storage)
    batch.create_batch(huey.storage, job_id, owner_id, request)
    try:
        queued = submit(TASK, owner_id=owner_id, params=_params(request), id=job_id,
                        admission=admission)
    except BaseException:
        batch.delete_batch(huey.storage, job_id)
        raise
    if queued != job_id:
        batch.delete_batch(huey.storage, job_id)
    return queued


def enqueue_retry(parent_id: str, owner_id: int | None,
                  admission: Admission | None = None) -> tuple[str, int]:
    """Queue a new batch of *parent_id*'s failed items; return its id and size.

    :raises Conflict: the batch is still running, or none of its items failed.
    """
    parent = jobs.get(huey.storage, parent_id)
    if parent is None or parent["status"] in jobs.ACTIVE:
        raise Conflict(f"batch {parent_id} has not ended; retry its failed items after")
    job_id = str(uuid.uuid4())
    count = batch.create_retry(huey.storage, parent_id, job_id, owner_id)
    if not count:
        raise Conflict(f"batch {parent_id} has no failed items")
    params = {"total_items": count, "parent_job_id": parent_id,
              "options": batch.get_batch(huey.storage, job_id)["options"]}
    webhooks.inherit_target(huey.storage, parent_id, job_id)
    try:
        submit(TASK, owner_id=owner_id, params=params, id=job_id, admission=admission)
    except BaseException:
        batch.delete_batch(huey.storage, job_id)
        webhooks.drop_target(huey.storage, job_id)
        raise
    return job_id, count
