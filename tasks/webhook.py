"""Webhook deliveries: one ``webhook`` job per ended job that has a callback URL."""

import json

from qrq import webhooks
from qrq.queue import huey, job_task, jobs, submit

RETRIES = 6  # at the default 2 s first delay, doubling: about two minutes in all


@job_task("webhook", name="webhook.deliver", retries=RETRIES, timeout=60)
def deliver_webhook(job_id: str, task=None) -> dict:
    """POST *job_id*'s final record to its callback URL, signed; retried on failure."""
    target = webhooks.target_of(huey.storage, job_id)
    job = jobs.get(huey.storage, job_id)
    if target is None or job is None:
        return {"delivered": False, "reason": "the job or its callback is gone"}
    body = json.dumps({"event": "job.ended", "job": jobs.public_view(job)},
                      separators=(",", ":")).encode()
    status = webhooks.deliver(target["url"], body,
                              webhooks.user_secret(huey.settings, target["owner_id"]),
                              allow_private=huey.settings.webhook_allow_private,
                              delivery_id=task.id)
    return {"delivered": True, "job_id": job_id, "status_code": status}


@huey.on_job_end
def enqueue_webhook(job_id: str) -> None:
    """Queue the delivery of an ended job that has a callback URL (not of deliveries)."""
    target = webhooks.target_of(huey.storage, job_id)
    if target is None or jobs.get(huey.storage, job_id)["type"] == "webhook":
        return
    submit(deliver_webhook, job_id, owner_id=target["owner_id"],
           params={"job_id": job_id, "callback_url": target["url"]})
