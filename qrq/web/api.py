"""The JSON API: submit jobs, read their status, fetch their outputs."""

from __future__ import annotations

import math
import time
import uuid
from typing import Any

from flask import Blueprint, current_app, jsonify, request, url_for

from qrq.analytics import requesters
from qrq.appdb.models import Template
from qrq.batch import counts as batch_counts
from qrq.cards.generate import artifact_path, prepare
from qrq.errors import Conflict, NotFound, ValidationError
from qrq.queue import huey, jobs, stats, submit
from qrq.web import admission
from qrq.web.auth import current_user, login_required
from qrq.web.downloads import send_artifact
from qrq.web.params import int_arg, int_field, json_object

bp = Blueprint("api", __name__, url_prefix="/api")

DEFAULT_PDF_SECONDS = 2.0
MAX_PAGE_SIZE = 200


check_job_quota = admission.check_job_quota


def visible_job(job_id: str) -> dict[str, Any]:
    """The job if the caller may see it; another user's job is as absent as a missing one."""
    user = current_user()
    job = jobs.get(huey.storage, job_id)
    if job is None or not (user.is_admin or job["owner_id"] == user.id):
        raise NotFound(f"job {job_id} not found")
    return job


def job_view(job: dict[str, Any]) -> dict[str, Any]:
    view = jobs.public_view(job, admin=current_user().is_admin)
    view["status_url"] = url_for("api.job_status", job_id=job["id"])
    if view["status"] == "finished" and (view["result"] or {}).get("artifact"):
        view["result"]["download_url"] = url_for("api.download", job_id=job["id"])
    if job["type"] == "batch":  # a batch's item counts: completed (ok), failed, total
        view.update(batch_counts(huey.storage, job["id"]))
    return view


def estimate_completion(job_type: str) -> float:
    settings = current_app.config["QRQ"]
    each = jobs.median_duration(huey.storage, job_type) or DEFAULT_PDF_SECONDS
    ahead = huey.storage.backlog()
    return time.time() + each * math.ceil(ahead / max(1, settings.workers))


@bp.post("/generate-qr-pdf")
@login_required
def generate_qr_pdf():
    """Queue a QR-code PDF of a template; answers 202 with the job id at once."""
    body = json_object({"template_id", "options"}, {"template_id"})
    checks = admission.job_admission(body)
    replayed = admission.replayed_job(checks)
    if replayed is not None:
        return pdf_accepted(replayed, replayed=True)
    check_job_quota()
    template_id = int_field(body["template_id"], "template_id")
    template = Template.first_by("id", template_id)
    if template is None:
        raise ValidationError(f"template {template_id} does not exist", field="template_id")
    settings = current_app.config["QRQ"]
    options = body.get("options") or {}
    prepare(template.to_dict(), options, settings.max_copies,  # 422 before enqueue
            margin_mm=settings.print_margin_mm)
    new_id = str(uuid.uuid4())
    job_id = submit("pdf.generate", template_id, options, owner_id=current_user().id,
                    params={"template_id": template_id, "options": options}, id=new_id,
                    admission=checks)
    return pdf_accepted(job_id, replayed=job_id != new_id)


def pdf_accepted(job_id: str, replayed: bool = False):
    """202 with the job; a repeated Idempotency-Key gets its first job's, as it is now."""
    status_url = url_for("api.job_status", job_id=job_id)
    status = jobs.get(huey.storage, job_id)["status"] if replayed else "queued"
    response = jsonify(job_id=job_id, status=status, status_url=status_url,
                       estimated_completion=jobs.iso(estimate_completion("pdf")))
    return admission.mark_replayed(response, replayed), 202, {"Location": status_url}


@bp.get("/job-status/<job_id>")
@login_required
def job_status(job_id: str):
    """A job's status, progress, timestamps, result and error."""
    return jsonify(job_view(visible_job(job_id)))


@bp.get("/jobs/<job_id>")
@login_required
def job_detail(job_id: str):
    """Same as ``/api/job-status/<job_id>``."""
    return jsonify(job_view(visible_job(job_id)))


@bp.delete("/jobs/<job_id>")
@login_required
def cancel_job(job_id: str):
    """Cancel a job: at once if queued, at its next progress report if running."""
    job = visible_job(job_id)
    if job["status"] in jobs.ENDED:
        raise Conflict(f"job already {job['status']}")
    if job["type"] == "analytics" and not current_user().is_admin:  # shared: withdraw
        status = requesters.withdraw(huey.storage, job, current_user().id, huey.cancel)
    else:
        status = huey.cancel(job_id)
    return jsonify(job_id=job_id, status=status), 202


@bp.get("/jobs")
@login_required
def list_jobs():
    """The caller's jobs, newest first (admins: everyone's); filter by status and type."""
    user = current_user()
    status = request.args.get("status")
    if status is not None and status not in jobs.STATES:
        raise ValidationError(f"must be one of {', '.join(jobs.STATES)}", field="status")
    limit = int_arg("limit", 50, 1, MAX_PAGE_SIZE)
    offset = int_arg("offset", 0, 0, 10**9)
    found, _ = stats.search_jobs(huey.storage, owner_id=None if user.is_admin else user.id,
                                 status=status, job_type=request.args.get("type"),
                                 limit=limit, offset=offset, with_total=False)
    return jsonify(jobs=[job_view(job) for job in found], limit=limit, offset=offset)


@bp.get("/jobs/<job_id>/download")
@login_required
def download(job_id: str):
    """A finished job's output file, to its owner (or an admin)."""
    job = visible_job(job_id)
    result = jobs.public_view(job)["result"] or {}
    if job["status"] != "finished" or not result.get("artifact"):
        raise NotFound(f"job {job_id} has no output yet")
    # The path comes from the validated job id, never from the request or the record.
    path = artifact_path(current_app.config["QRQ"], job["id"])
    return send_artifact(path, result.get("bytes"),
                         result.get("content_type", "application/pdf"),
                         f"qrq-{job_id}.pdf", f"the output of job {job_id} has been removed")


@bp.get("/templates")
@login_required
def list_templates():
    """Every card template."""
    return jsonify(templates=[t.to_dict() for t in Template.select().order_by(Template.id)])


@bp.get("/templates/<int:template_id>")
@login_required
def show_template(template_id: int):
    """One card template."""
    return jsonify(Template.get_by_id_or_404(template_id).to_dict())


@bp.get("/me")
@login_required
def me():
    """The caller's account."""
    return jsonify(current_user().to_dict())
