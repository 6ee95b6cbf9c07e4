"""The JSON API: submit jobs, read their status, fetch their outputs."""

from __future__ import annotations

import math
import time
import uuid
from typing import Any

from flask import Blueprint, current_app, jsonify, request, url_for

from qrq import batch
from qrq.analytics import requesters
from qrq.appdb.models import Template
from qrq.cards.generate import artifact_name, prepare
from qrq.errors import Conflict, JobNotFinished, NotFound, ValidationError
from qrq.queue import audit, catalog, huey, jobs, stats, submit
from qrq.web import admission, waiting
from qrq.web import webhooks as webhook_api
from qrq.web.auth import current_user, login_required
from qrq.web.downloads import send_artifact, send_batch_output
from qrq.web.paging import choice_arg, cursor_value, paged, read_page
from qrq.web.params import int_arg, int_field, json_object

bp = Blueprint("api", __name__, url_prefix="/api")

DEFAULT_PDF_SECONDS = 2.0
MAX_PAGE_SIZE = 200

# One per process: reads the state of every waited-for job in one query.
watcher = waiting.JobWatcher(lambda ids: {
    job_id: (state["status"], state["progress"], state["stage"])
    for job_id, state in stats.progress_of(huey.storage, ids).items()})


check_job_quota = admission.check_job_quota


def visible_job(job_id: str) -> dict[str, Any]:
    """The job if the caller may see it; another user's job is as absent as a missing one."""
    user = current_user()
    job = jobs.get(huey.storage, job_id)
    if job is None or not (user.is_admin or job["owner_id"] == user.id):
        raise NotFound(f"job {job_id} not found")
    return job


def job_view(job: dict[str, Any]) -> dict[str, Any]:
    return view_of(job, current_user().is_admin, url_for("api.job_status", job_id=job["id"]),
                   url_for("api.download", job_id=job["id"]))


def view_of(job: dict[str, Any], admin: bool, status_url: str,
            download_url: str) -> dict[str, Any]:
    """:func:`job_view` from values read in its request (a stream's end event is
    written after its request has ended)."""
    view = batch.status_view(huey.storage, job, admin=admin)
    view["status_url"] = status_url
    if view["status"] == "finished" and (view["result"] or {}).get("artifact"):
        view["result"]["download_url"] = download_url
    return view


def estimate_completion(job_type: str) -> float:
    """When a job submitted now should end: the median run time times the rows ahead
    per worker. Both are read at most once a second per process (ESTIMATE_SECONDS):
    two queries per POST, on PostgreSQL round trips, for an estimate."""
    settings = current_app.config["QRQ"]
    now = time.time()
    key = (id(huey.storage), job_type)
    read_at, each, ahead = _estimates.get(key, (0.0, None, 0))
    if now - read_at > ESTIMATE_SECONDS:
        each, ahead = jobs.median_duration(huey.storage, job_type), huey.storage.backlog()
        _estimates[key] = (now, each, ahead)
    return now + (each or DEFAULT_PDF_SECONDS) * math.ceil(ahead / max(1, settings.workers))


ESTIMATE_SECONDS = 1.0
_estimates: dict[tuple, tuple[float, float | None, int]] = {}


@bp.post("/generate-qr-pdf")
@login_required
def generate_qr_pdf():
    """Queue a QR-code PDF of a template; answers 202 with the job id at once."""
    body = json_object({"template_id", "options", "callback_url"}, {"template_id"})
    checks = admission.job_admission(body)
    replayed = admission.replayed_job(checks)
    if replayed is not None:
        return pdf_accepted(replayed, replayed=True)
    # No early quota check (check_job_quota): the enqueue checks it atomically, and a
    # second count of the caller's unfinished jobs was 13% of an accepted POST.
    template_id = int_field(body["template_id"], "template_id")
    template = Template.first_by("id", template_id)
    if template is None:
        raise ValidationError(f"template {template_id} does not exist", field="template_id")
    settings = current_app.config["QRQ"]
    options = body.get("options")
    options = {} if options is None else options
    prepare(template.to_dict(), options, settings.max_copies,  # 422 before enqueue
            margin_mm=settings.print_margin_mm)
    callback = webhook_api.callback_url(body.get("callback_url", webhook_api.UNSET))
    new_id = str(uuid.uuid4())
    job_id = webhook_api.submit_with_callback(new_id, callback, lambda: submit(
        "pdf.generate", template_id, options, owner_id=current_user().id,
        params={"template_id": template_id, "options": options}, id=new_id,
        admission=checks))
    return pdf_accepted(job_id, replayed=job_id != new_id)


def pdf_accepted(job_id: str, replayed: bool = False):
    """202 with the job; a repeated Idempotency-Key gets its first job's, as it is now."""
    status_url = url_for("api.job_status", job_id=job_id)
    status = jobs.get(huey.storage, job_id)["status"] if replayed else "queued"
    response = jsonify(job_id=job_id, status=status, status_url=status_url,
                       estimated_completion=jobs.iso(estimate_completion("pdf")))
    return admission.mark_replayed(response, replayed), 202, {"Location": status_url}


def retry_after(job: dict[str, Any]) -> int | None:
    """Seconds a client should wait before asking again about an unfinished job."""
    if job["status"] in jobs.ENDED:
        return None
    if job["status"] == "retrying" and job["next_attempt_at"]:
        return max(1, math.ceil(job["next_attempt_at"] - time.time()))
    return 1 if job["status"] == "running" else 2


def status_answer(job: dict[str, Any]):
    """The job's view with its attempts, and ``Retry-After`` while it has not ended."""
    response = jsonify(job_view(job) | {"attempts_history": jobs.attempts_view(
        huey.storage, job["id"], current_user().is_admin)})
    seconds = retry_after(job)
    if seconds is not None:
        response.headers["Retry-After"] = str(seconds)
    return response


# Status answers of other blueprints: Retry-After while their job has not ended.
_OTHER_STATUS_ENDPOINTS = {"batch.show", "analytics.job_status"}


@bp.after_app_request
def _retry_after(response):
    """``Retry-After`` on every 202 of the API and on a status answer of a job that has
    not ended, in one place for every blueprint."""
    if "Retry-After" in response.headers or not request.path.startswith("/api/"):
        return response
    if response.status_code == 202:
        response.headers["Retry-After"] = "2"
    elif (response.status_code == 200 and request.endpoint in _OTHER_STATUS_ENDPOINTS
          and response.is_json and (response.get_json() or {}).get("status") in jobs.ACTIVE):
        response.headers["Retry-After"] = "2"
    return response


def _status_changed(seen, state) -> bool:
    return state is None or seen is None or state[0] != seen[0]


@bp.get("/jobs/<job_id>")
@bp.get("/job-status/<job_id>")  # registered first: url_for builds this one
@login_required
def job_status(job_id: str):
    """A job's status, progress, timestamps, result and error.

    ``?wait=SECONDS`` (at most 60) answers at the job's next status change, or at
    once if it has ended, or after SECONDS with the current status.
    """
    job = visible_job(job_id)
    wait = int_arg("wait", 0, 0, waiting.MAX_WAIT_SECONDS)
    if wait and job["status"] not in jobs.ENDED and not waiting.woken(request.environ):
        state = (job["status"], job["progress"], job["stage"])
        if waiting.can_park(request.environ):  # qrq's server: no thread held meanwhile
            waiting.park_request(request.environ, watcher.subscriber(
                job["id"], state, wait, _status_changed))
            return "", 204  # dropped by the server, which runs the request again
        slots = current_app.extensions["qrq_waiters"]
        if slots.take():
            try:
                watcher.wait_change(job["id"], state, wait, _status_changed)
            finally:
                slots.give_back()
            job = visible_job(job_id)
    return status_answer(job)


@bp.delete("/jobs/<job_id>")
@login_required
def cancel_job(job_id: str):
    """Cancel a job: at once if queued, at its next progress report if running."""
    job = visible_job(job_id)
    if job["status"] in jobs.ENDED:
        raise Conflict(f"job already {job['status']}")
    user = current_user()
    if job["type"] == "analytics" and not user.is_admin:  # shared: withdraw
        status = requesters.withdraw(huey.storage, job, user.id, huey.cancel)
    else:
        status = huey.cancel(job_id)
    if job["owner_id"] != user.id:  # an admin's power over another's job: as the dashboard
        audit.record(huey.storage, user.name, "job.cancel", job_ids=[job_id])
    return jsonify(job_id=job_id, status=status), 202


@bp.get("/jobs")
@login_required
def list_jobs():
    """The caller's jobs, newest first (admins: everyone's); filter by status and type.

    Paged by ``limit`` and ``cursor`` (see :mod:`qrq.web.paging`); ``offset`` still
    works for the first request of older clients.
    """
    user = current_user()
    status = choice_arg("status", jobs.STATES)
    job_type = choice_arg("type", catalog.job_types())
    page = read_page(50, MAX_PAGE_SIZE)
    before = None
    if page.position is not None:
        before = (cursor_value(page.position, "t", (int, float)),
                  cursor_value(page.position, "id", str))
    if before and request.args.get("offset") not in (None, "", "0"):
        raise ValidationError("give offset or cursor, not both (the cursor already says "
                              "where the page starts)", field="offset")
    offset = 0 if before else int_arg("offset", 0, 0, 10**9)
    found, _ = stats.search_jobs(huey.storage, owner_id=None if user.is_admin else user.id,
                                 status=status, job_type=job_type, limit=page.limit + 1,
                                 offset=offset, before=before, with_total=False)
    more = found[page.limit:]
    found = found[:page.limit]
    position = {"t": found[-1]["created_at"], "id": found[-1]["id"]} if more else None
    return paged({"jobs": [job_view(job) for job in found], "limit": page.limit,
                  "offset": offset}, position)


@bp.get("/jobs/<job_id>/download")
@login_required
def download(job_id: str):
    """A finished job's output file, to its owner (or an admin); a batch's combined PDF
    (also when it was canceled midway, as at ``/api/batch/<id>/download/pdf``)."""
    job = visible_job(job_id)
    if job["type"] == "batch":
        return send_batch_output(job, "pdf")
    result = jobs.public_view(job)["result"] or {}
    if job["status"] != "finished":
        then = ("it has no output" if job["status"] in jobs.ENDED
                else "its output can be downloaded once it has finished")
        raise JobNotFinished(f"job {job_id} is {job['status']}; {then}",
                             job_status=job["status"])
    if not result.get("artifact"):
        raise NotFound(f"job {job_id} has no output")
    # The name comes from the validated job id, never from the request or the record.
    return send_artifact(artifact_name(job["id"]), result.get("bytes"),
                         result.get("content_type", "application/pdf"),
                         f"qrq-{job_id}.pdf", f"the output of job {job_id} is no longer stored")


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
