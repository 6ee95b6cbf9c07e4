"""Bulk QR generation as a job: encode the items, write the PDF and ZIP, mail the owner
(that it finished, or that no item could be rendered)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from qrq import batch
from qrq.appdb.db import app_db, bind
from qrq.appdb.models import User
from qrq.artifacts import open_store
from qrq.batch import run as batch_run
from qrq.queue import huey, job_task, jobs, submit

logger = logging.getLogger("qrq.batch")


@job_task(name="batch.generate")  # type and limits: qrq/queue/catalog.py
def generate_batch(task=None) -> dict:
    """Run or resume a batch (its items are in the queue database under the job id)."""
    current = huey.settings
    bind(current)
    try:
        result = batch_run.run_batch(huey.storage, open_store(current), task.id,
                                     task.check_timeout, margin_mm=current.print_margin_mm)
    except batch_run.NothingRendered as exc:
        total = exc.total
        mail_owner(task.id, lambda base: batch_run.failure_mail(task.id, total, base))
        raise
    result["mail_job_id"] = mail_owner(
        task.id, lambda base: batch_run.completion_mail(task.id, result, base))
    return result


def mail_owner(job_id: str, compose: Callable[[str], tuple[str, str]]) -> str | None:
    """Queue the mail *compose* writes (its subject and body, given the app's base URL)
    to the batch's owner, once; never raise.

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
            subject, body = compose(base)
            submit("mail.send", [user.email], subject, body, owner_id=owner_id,
                   params={"to": [user.email], "batch_job_id": job_id}, id=mail_id)
        return mail_id
    except Exception:
        logger.exception("completion mail of batch %s not queued", job_id)
        return None
