"""Admin-only JSON endpoints: re-run dead letters, purge old jobs."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify

from qrq.errors import ValidationError
from qrq.queue import huey, jobs
from qrq.queue.retention import parse_age, purge_jobs
from qrq.web.auth import admin_required
from qrq.web.params import json_object

bp = Blueprint("admin_api", __name__, url_prefix="/api/admin")
MAX_BULK = 10_000


@bp.post("/jobs/<job_id>/retry")
@admin_required
def retry_job(job_id: str):
    """Run a failed, canceled or expired job again under the same id."""
    huey.retry(job_id)
    return jsonify(job_id=job_id, status="queued"), 202


@bp.post("/jobs/retry-failed")
@admin_required
def retry_failed():
    """Re-run every failed job (optionally of one ``type``)."""
    body = json_object(optional=True)
    job_type = body.get("type")
    if job_type is not None and not isinstance(job_type, str):
        raise ValidationError("must be a string", field="type")
    failed = jobs.list_jobs(huey.storage, status="failed", job_type=job_type, limit=MAX_BULK)
    for job in failed:
        huey.retry(job["id"])
    return jsonify(retried=[job["id"] for job in failed]), 202


@bp.post("/jobs/purge")
@admin_required
def purge():
    """Delete ended jobs older than ``older_than`` (e.g. "30d"), of one ``status`` or all."""
    body = json_object(optional=True)
    try:
        older_than = parse_age(str(body.get("older_than", "30d")))
    except ValueError as exc:
        raise ValidationError(str(exc), field="older_than") from None
    status = body.get("status")
    if status is not None and status not in jobs.ENDED:
        raise ValidationError(f"must be one of {', '.join(jobs.ENDED)}", field="status")
    statuses = (status,) if status else jobs.ENDED
    count = purge_jobs(huey.storage, current_app.config["QRQ"].artifacts_dir, older_than,
                       statuses)
    return jsonify(purged=count)


@bp.get("/queue-status")
@admin_required
def queue_status():
    """Per job type: queued, scheduled, running, retrying, failed, finished in the last
    hour, the oldest queued job's age; the consumers with their current jobs."""
    from qrq.web.ops import queue_status_view

    return jsonify(queue_status_view())
