"""Webhook deliveries: one ``webhook`` job per ended job that has a callback URL
(queued by :func:`qrq.webhooks.enqueue_delivery`)."""

import json

from qrq import webhooks
from qrq.queue import huey, job_task, jobs


@job_task(name=webhooks.DELIVERY_TASK)  # type and limits: qrq/queue/catalog.py
def deliver_webhook(job_id: str, task=None) -> dict:
    """POST *job_id*'s final record to its callback URL, signed; retried on failure."""
    target = webhooks.target_of(huey.storage, job_id)
    job = jobs.get(huey.storage, job_id)
    if target is None or job is None:
        return {"delivered": False, "reason": "the job or its callback is gone"}
    body = json.dumps({"event": "job.ended", "job": jobs.public_view(job)},
                      separators=(",", ":")).encode()
    # Read at each attempt: a delivery queued before its owner replaced the secret is
    # signed with the new one.
    secret = webhooks.user_secret(huey.storage, huey.settings, target["owner_id"])
    status = webhooks.deliver(target["url"], body, secret,
                              allow_private=huey.settings.webhook_allow_private,
                              delivery_id=task.id)
    return {"delivered": True, "job_id": job_id, "status_code": status}
