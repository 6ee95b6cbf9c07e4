"""Bulk generation over the API: submit a batch, page through its items, re-run the
failed ones, download its combined PDF and ZIP. Everything is its owner's (or an
admin's); another user's batch answers 404 like a missing one."""

from __future__ import annotations

import uuid

from flask import Blueprint, Response, current_app, jsonify, request, url_for

from qrq import batch
from qrq.batch import run as batch_run
from qrq.batch.submit import enqueue_batch, enqueue_retry
from qrq.errors import NotFound, ValidationError
from qrq.queue import audit, huey
from qrq.web import admission
from qrq.web.api import check_job_quota, visible_job
from qrq.web.auth import current_user, login_required
from qrq.web.downloads import send_batch_output
from qrq.web.paging import cursor_value, paged, read_page
from qrq.web.params import int_arg, json_object
from qrq.web.webhooks import UNSET, callback_url, submit_with_callback

bp = Blueprint("batch", __name__, url_prefix="/api/batch")

MAX_PER_PAGE = 1000


def visible_batch(job_id: str) -> tuple[dict, dict]:
    """The job and its batch row, if the caller may see them."""
    job = visible_job(job_id)
    found = batch.get_batch(huey.storage, job["id"]) if job["type"] == "batch" else None
    if found is None:
        raise NotFound(f"batch {job_id} not found")
    return job, found


def _summary(job: dict, found: dict) -> dict:
    job_id = job["id"]
    view = {"batch_job_id": job_id, "status": job["status"], "progress": job["progress"],
            "stage": job["stage"], "total": found["total"], "completed": found["completed"],
            "failed": found["failed"], "parent_job_id": found["parent_id"],
            "retry_job_ids": [child["job_id"] for child in batch.retries(huey.storage, job_id)],
            "status_url": url_for("api.job_status", job_id=job_id),
            "items_url": url_for("batch.items", job_id=job_id), "downloads": {}}
    for kind, info in (found["outputs"] or {}).items():
        view["downloads"][kind] = {**info, "url": url_for("batch.download", job_id=job_id,
                                                          kind=kind)}
    return view


@bp.post("/generate-qrs")
@login_required
def generate_qrs():
    """Queue a batch of codes; answers 202 with its id and size at once."""
    settings = current_app.config["QRQ"]
    request.max_content_length = settings.max_batch_bytes
    body = json_object()  # parse_request checks the keys
    checks = admission.job_admission(body)
    replayed = admission.replayed_job(checks)
    if replayed is not None:
        return batch_accepted(replayed, replayed=True)
    check_job_quota()
    job_id = str(uuid.uuid4())
    given = body.pop("callback_url", UNSET)
    checked = batch.parse_request(body, batch.load_templates, job_id,
                                  settings.max_batch_items,
                                  margin_mm=settings.print_margin_mm)
    queued = submit_with_callback(job_id, callback_url(given), lambda: enqueue_batch(
        checked, job_id, current_user().id, checks))
    return batch_accepted(queued, replayed=queued != job_id)


def batch_accepted(job_id: str, replayed: bool = False):
    """202 with the batch; a repeated Idempotency-Key gets its first batch's, as it is now."""
    status_url = url_for("api.job_status", job_id=job_id)
    job, found = visible_batch(job_id)
    status = job["status"] if replayed else "queued"
    response = jsonify(batch_job_id=job_id, total_items=found["total"], status=status,
                       status_url=status_url, items_url=url_for("batch.items", job_id=job_id))
    return admission.mark_replayed(response, replayed), 202, {"Location": status_url}


@bp.get("/<job_id>")
@login_required
def show(job_id: str):
    """A batch's counts, status and download links."""
    return jsonify(_summary(*visible_batch(job_id)))


@bp.get("/<job_id>/items")
@login_required
def items(job_id: str):
    """One page of a batch's items in index order: ``?status=ok|failed|pending&page=N``."""
    job, found = visible_batch(job_id)
    status = request.args.get("status")
    if status is not None and status not in batch.ITEM_STATUSES:
        raise ValidationError(f"must be one of {', '.join(batch.ITEM_STATUSES)}",
                              field="status")
    # limit + cursor (qrq.web.paging); page and per_page still work for older clients.
    paging = read_page(int_arg("per_page", 100, 1, MAX_PER_PAGE), MAX_PER_PAGE)
    per_page = paging.limit
    page = int_arg("page", 1, 1, 10**6)
    if paging.position is not None:
        per_page = cursor_value(paging.position, "n", int, 1, MAX_PER_PAGE)
        page = cursor_value(paging.position, "p", int, 1, 10**6)
    rows, matching = batch.list_items(huey.storage, job["id"], found["total"], status, page,
                                      per_page, batch.formats_of(found["options"]))
    for row in rows:
        if row["output"]:
            for fmt in batch.FORMATS:
                row["output"][f"{fmt}_url"] = url_for("batch.item_code", job_id=job["id"],
                                                      idx=row["idx"], fmt=fmt)
    more = page * per_page < matching
    return paged({"items": rows, "page": page, "per_page": per_page, "limit": per_page,
                  "total": matching, "next_page": page + 1 if more else None,
                  "status": status, "batch": _summary(job, found)},
                 {"p": page + 1, "n": per_page} if more else None)


@bp.get("/<job_id>/items/<int:idx>/<any(svg, png):fmt>")
@login_required
def item_code(job_id: str, idx: int, fmt: str):
    """One ok item's code as SVG or PNG: the file the batch's ZIP holds for it."""
    job, found = visible_batch(job_id)
    if idx >= found["total"]:
        raise NotFound(f"batch {job_id} has no item {idx} (its items are 0 to "
                       f"{found['total'] - 1})")
    return item_code_response(job["id"], idx, fmt, found["options"])


def item_code_response(job_id: str, idx: int, fmt: str, options: dict) -> Response:
    """The SVG or PNG of one ok item (the API's and the dashboard's links)."""
    code = batch_run.item_code(huey.storage, job_id, idx, fmt, options)
    if code is None:
        raise NotFound(f"item {idx} of batch {job_id} has no code")
    return Response(code, mimetype="image/png" if fmt == "png" else "image/svg+xml")


@bp.post("/<job_id>/retry-failed")
@login_required
def retry_failed(job_id: str):
    """Re-run only the failed items, as a new batch linked to this one."""
    job, found = visible_batch(job_id)
    check_job_quota()
    new_id, count = enqueue_retry(job["id"], found["owner_id"])  # an admin's too
    user = current_user()
    if found["owner_id"] != user.id:  # an admin's power over another's job: as the dashboard
        audit.record(huey.storage, user.name, "batch.retry_failed_items", job_ids=[job["id"]],
                     detail={"new_batch": new_id, "items": count})
    status_url = url_for("api.job_status", job_id=new_id)
    response = jsonify(batch_job_id=new_id, parent_job_id=job["id"], total_items=count,
                       status="queued", status_url=status_url,
                       items_url=url_for("batch.items", job_id=new_id))
    return response, 202, {"Location": status_url}


@bp.get("/<job_id>/download/<kind>")
@login_required
def download(job_id: str, kind: str):
    """The combined PDF (``pdf``) or the ZIP of SVGs (``zip``), once written."""
    return send_batch_output(visible_batch(job_id)[0], kind)
