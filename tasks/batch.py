"""Bulk QR generation as a job: encode the items, write the PDF and ZIP, mail the owner."""

from __future__ import annotations

import logging
import uuid

from qrq import batch
from qrq.appdb.db import app_db, init_db
from qrq.appdb.models import User
from qrq.batch import run as batch_run
from qrq.errors import Conflict
from qrq.queue import huey, job_task, jobs, submit
from tasks.mail import send_mail_task

logger = logging.getLogger("qrq.batch")
settings = huey.settings


@job_task("batch", name="batch.generate", timeout=settings.batch_timeout, retries=3,
          expires=settings.job_expiry)
def generate_batch(task=None) -> dict:
    """Run or resume a batch (its items are in the queue database under the job id)."""
    current = huey.settings
    if app_db.database != str(current.app_db):
        init_db(current.app_db, current.busy_timeout)
    result = batch_run.run_batch(huey.storage, current.artifacts_dir, task.id, task.check_timeout)
    result["mail_job_id"] = mail_owner(task.id, result)
    return result


def mail_owner(job_id: str, result: dict) -> str | None:
    """Queue the completion mail to the batch's owner, once; never raise.

    The mail is a job of its own (retried, recorded). Its id is claimed on the
    batch row first, so a re-run of this batch queues it at most once.
    """
    try:
        owner_id = batch.get_batch(huey.storage, job_id)["owner_id"]
        if owner_id is None:
            return None
        with app_db.connection_context():
            user = User.get_or_none(User.id == owner_id)
        if user is None or not user.email:
            return None
        mail_id = batch.claim_mail(huey.storage, job_id)
        if jobs.get(huey.storage, mail_id) is None:
            current = huey.settings
            base = current.base_url or f"http://{current.host}:{current.port}"
            subject, body = batch_run.completion_mail(job_id, result, base)
            submit(send_mail_task, [user.email], subject, body, owner_id=owner_id,
                   params={"to": [user.email], "batch_job_id": job_id}, id=mail_id)
        return mail_id
    except Exception:
        logger.exception("completion mail of batch %s not queued", job_id)
        return None


def _params(request: batch.BatchRequest, parent_id: str | None = None) -> dict:
    return {"total_items": len(request.items), "template_ids": request.template_ids[:50],
            "options": request.options, "parent_job_id": parent_id}


def enqueue_batch(request: batch.BatchRequest, job_id: str, owner_id: int | None) -> str:
    """Store a checked batch under *job_id* (the id its payloads were made with) and queue it."""
    batch.purge_orphans(huey.storage)
    batch.create_batch(huey.storage, job_id, owner_id, request)
    try:
        submit(generate_batch, owner_id=owner_id, params=_params(request), id=job_id)
    except BaseException:
        batch.delete_batch(huey.storage, job_id)
        raise
    return job_id


def enqueue_retry(parent_id: str, owner_id: int | None) -> tuple[str, int]:
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
    try:
        submit(generate_batch, owner_id=owner_id, params=params, id=job_id)
    except BaseException:
        batch.delete_batch(huey.storage, job_id)
        raise
    return job_id, count
