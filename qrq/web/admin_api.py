"""Admin-only JSON endpoints: re-run dead letters, purge old jobs, run a periodic task now,
pause job types."""

from __future__ import annotations

from flask import Blueprint, jsonify, url_for

from qrq.queue import audit, dead_letters, huey, pauses, run_periodic_now
from qrq.web.auth import admin_required, current_user
from qrq.web.downloads import artifact_store
from qrq.web.ops import queue_status_view
from qrq.web.params import json_object

bp = Blueprint("admin_api", __name__, url_prefix="/api/admin")


@bp.post("/jobs/<job_id>/retry")
@admin_required
def retry_job(job_id: str):
    """Run a failed, canceled or expired job again under the same id."""
    huey.retry(job_id)
    audit.record(huey.storage, current_user().name, "job.retry", job_ids=[job_id])
    return jsonify(job_id=job_id, status="queued"), 202


@bp.post("/jobs/retry-failed")
@admin_required
def retry_failed():
    """Re-run every failed job (optionally of one ``type``); lists the jobs it could not
    retry under ``skipped``, each with the reason."""
    body = json_object({"type"}, optional=True)
    report = dead_letters.retry_failed(huey, body.get("type"))
    audit.record(huey.storage, current_user().name, "jobs.retry_failed",
                 job_ids=report["retried"],
                 detail={"type": body.get("type"), "skipped": len(report["skipped"])})
    return jsonify(report), 202


@bp.post("/jobs/purge")
@admin_required
def purge():
    """Delete ended jobs older than ``older_than`` (e.g. "30d"), of one ``status`` or all."""
    body = json_object({"older_than", "status"}, optional=True)
    count = dead_letters.purge_ended(huey.storage, artifact_store(),
                                     body.get("older_than", "30d"), body.get("status"))
    audit.record(huey.storage, current_user().name, "jobs.purge", count=count, detail={
        "older_than": body.get("older_than", "30d"), "status": body.get("status")})
    return jsonify(purged=count)


@bp.post("/schedule/<name>/run")
@admin_required
def run_periodic(name: str):
    """Run periodic task *name* now, as a job of its own; its schedule goes on."""
    job_id = run_periodic_now(name, params={"requested_by": current_user().name})
    audit.record(huey.storage, current_user().name, "schedule.run", job_ids=[job_id],
                 detail={"task": name})
    status_url = url_for("api.job_status", job_id=job_id)
    return (jsonify(job_id=job_id, name=name, status="queued", status_url=status_url), 202,
            {"Location": status_url})


@bp.get("/queue-status")
@admin_required
def queue_status():
    """Per job type: queued, scheduled, running, retrying, failed, finished in the last
    hour, the oldest queued job's age; the consumers with their current jobs."""
    return jsonify(queue_status_view())


@bp.post("/types/<job_type>/pause")
@admin_required
def pause_type(job_type: str):
    """Pause a job type: consumers start no new job of it; queued jobs wait."""
    outcome = pauses.pause(huey.storage, job_type, current_user().name)
    audit.record(huey.storage, current_user().name, "type.pause", count=outcome["queued"],
                 detail={"type": job_type, "changed": outcome["changed"]})
    return jsonify(**outcome, message=pauses.describe(outcome))


@bp.post("/types/<job_type>/resume")
@admin_required
def resume_type(job_type: str):
    """Resume a paused job type: its queued jobs may start at once."""
    outcome = pauses.resume(huey.storage, job_type)
    audit.record(huey.storage, current_user().name, "type.resume", count=outcome["queued"],
                 detail={"type": job_type, "changed": outcome["changed"]})
    return jsonify(**outcome, message=pauses.describe(outcome))
