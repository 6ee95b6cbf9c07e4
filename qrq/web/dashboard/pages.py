"""The dashboard's pages and actions: overview, jobs, failed jobs, consumers, backups.

The overview, the job list and the consumers build their context in one function
each, so :mod:`.live` renders the same parts again for the live refresh."""

from __future__ import annotations

import json
import re
import time
from typing import Any

from flask import current_app, flash, jsonify, redirect, request, url_for

from qrq import alerts
from qrq.appdb.models import User
from qrq.errors import Conflict, NotFound, StoreUnavailable, ValidationError
from qrq.queue import audit, dead_letters, huey, jobs, stats
from qrq.web.dashboard.batches import batch_view, failed_items
from qrq.web.dashboard.blueprint import bp, render
from qrq.web.dashboard.charts import charts
from qrq.web.dashboard.filters import FIELDS, cursor_of, job_filters, read_cursor
from qrq.web.dashboard.job_details import attempt_rows, result_layout, timings
from qrq.web.dashboard.session import admin_page, safe_next
from qrq.web.downloads import artifact_store, send_artifact

PAGE_SIZE = 50
# A new job shows up live if it was created up to this long before a poll (seconds):
# its creation time is taken before its commit, and web hosts' clocks differ a little.
NEW_JOB_SLACK = 30.0
MAX_PROGRESS_IDS = 100


def overview_context() -> dict[str, Any]:
    """What the overview shows, for the page and for its live refresh."""
    now = time.time()
    counts = stats.job_counts(huey.storage)
    return {"counts": counts, "status": stats.queue_status(huey.storage, now, counts),
            "charts": charts(now), "last_check": alerts.last_check(huey.storage), "now": now}


@bp.get("/")
@admin_page
def overview(user: User):
    return render("admin/overview.html", user, **overview_context())


def owner_names(rows: list[dict[str, Any]]) -> dict[int, str]:
    ids = {row["owner_id"] for row in rows if row.get("owner_id") is not None}
    if not ids:
        return {}
    return {u.id: u.name for u in User.select(User.id, User.name).where(User.id.in_(ids))}


def rows_context(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """What a job row needs besides the job: owner names, failed batch items, the time."""
    return {"rows": rows, "owners": owner_names(rows), "failed_items": failed_items(rows),
            "now": time.time()}


def _choices() -> dict[str, Any]:
    """The filter form's choices: job types, user names, registered consumers."""
    return {"types": stats.job_types(huey.storage),
            "users": [u.name for u in User.select(User.name).order_by(User.name).limit(500)],
            "workers": [c["id"] for c in stats.consumers(huey.storage)]}


@bp.get("/jobs")
@admin_page
def job_list(user: User):
    try:
        listing = job_filters(request.args)
    except ValidationError as exc:
        shown = {key: request.args.get(key, "")[:64] for key in FIELDS}
        return render("admin/jobs.html", user, rows=[], total=0, listing=None, shown=shown,
                      error=exc, owners={}, next_cursor=None, since=None, now=time.time(),
                      **_choices()), 422
    rows, total = stats.search_jobs(huey.storage, **listing.filters, sort=listing.sort,
                                    descending=listing.descending, after=listing.after,
                                    limit=PAGE_SIZE)
    text = listing.shown["q"].lower()
    # One job found by its id or its short id (the 8 digits the lists show): its page.
    if total == 1 and len(text) in (8, 36) and re.fullmatch(r"[0-9a-f-]+", text) and \
            rows[0]["id"].startswith(text):
        return redirect(url_for("admin.job_detail", job_id=rows[0]["id"]))
    # New jobs appear live on the first page of the newest-first order only.
    live = listing.after is None and listing.sort == "created" and listing.descending
    context = rows_context(rows)
    return render("admin/jobs.html", user, **context, total=total, listing=listing,
                  shown=listing.shown, error=None,
                  next_cursor=listing.position(rows[-1]) if len(rows) == PAGE_SIZE else None,
                  since=context["now"] - NEW_JOB_SLACK if live else None, **_choices())


def _get_job(job_id: str) -> dict[str, Any]:
    job = jobs.get(huey.storage, job_id)
    if job is None:
        raise NotFound(f"job {job_id[:64]} not found")
    return job


def _outputs(job_id: str) -> list[dict[str, Any]]:
    return [{"name": found.name, "bytes": found.size}
            for found in sorted(artifact_store().list(job_id), key=lambda f: f.name)]


@bp.get("/jobs/<job_id>")
@admin_page
def job_detail(user: User, job_id: str):
    if not jobs.JOB_ID.fullmatch(job_id):  # a short id, as the CLI takes: its job's page
        return redirect(url_for("admin.job_detail",
                                job_id=jobs.resolve_id(huey.storage, job_id[:64])))
    job = _get_job(job_id)
    view = jobs.public_view(job, admin=True)
    try:
        outputs = _outputs(job["id"])
    except StoreUnavailable as exc:  # the rest of the page is still worth seeing
        outputs = []
        flash(f"Files not listed: {exc}", "error")
    owner = User.get_or_none(User.id == job["owner_id"]) if job["owner_id"] else None
    attempt_list = attempt_rows(job["id"])
    layout, shown = result_layout(job, view["result"], outputs)
    return render("admin/job.html", user, job=job, view=view, owner=owner,
                  params=json.dumps(view["params"], indent=2, sort_keys=True),
                  result=json.dumps(view["result"], indent=2, sort_keys=True)
                  if view["result"] is not None else None,
                  layout=layout, shown=shown, attempt_rows=attempt_list,
                  timings=timings(job, attempt_list, time.time()), outputs=outputs,
                  ended=job["status"] in jobs.ENDED, batch=batch_view(job))


@bp.get("/jobs/<job_id>/files/<name>")
@admin_page
def job_file(user: User, job_id: str, name: str):
    job = _get_job(job_id)
    # Only names the listing produced: the path is never built from the request.
    for output in _outputs(job["id"]):
        if output["name"] == name:
            return send_artifact(output["name"], output["bytes"], None, output["name"],
                                 f"{output['name']} has been removed", as_attachment=True)
    raise NotFound(f"job {job['id']} has no file {name[:100]}")


def _back(default: str) -> str:
    return safe_next(request.form.get("next") or default)


@bp.post("/jobs/<job_id>/retry")
@admin_page
def retry_job(user: User, job_id: str):
    job = _get_job(job_id)
    try:
        huey.retry(job["id"])
    except Conflict as exc:
        flash(exc.message, "error")
    else:
        audit.record(huey.storage, user.name, "job.retry", job_ids=[job["id"]])
        flash(f"Job {job['id']} queued again.")
    return redirect(_back(url_for("admin.job_detail", job_id=job["id"])))


@bp.post("/jobs/<job_id>/cancel")
@admin_page
def cancel_job(user: User, job_id: str):
    job = _get_job(job_id)
    if job["status"] in jobs.ENDED:
        flash(f"Job {job['id']} already {job['status']}.", "error")
    else:
        status = huey.cancel(job["id"])
        flash(f"Job {job['id']} canceled." if status == "canceled" else
              f"Cancel requested: job {job['id']} ({status}) stops at its next progress "
              "report.")
        audit.record(huey.storage, user.name, "job.cancel", job_ids=[job["id"]])
    return redirect(_back(url_for("admin.job_detail", job_id=job["id"])))


@bp.get("/failed")
@admin_page
def failed(user: User):
    status = request.args.get("status", "failed")
    if status not in dead_letters.RETRYABLE:
        raise ValidationError("must be failed, canceled or expired", field="status")
    after = read_cursor(request.args)
    rows, total = stats.search_jobs(huey.storage, status=status, after=after,
                                    limit=PAGE_SIZE)
    last = rows[-1] if len(rows) == PAGE_SIZE else None
    return render("admin/failed.html", user, **rows_context(rows), total=total,
                  status=status, first_page=after is None,
                  next_cursor=cursor_of(last) if last else None)


@bp.post("/failed/retry-all")
@admin_page
def retry_all(user: User):
    report = dead_letters.retry_failed(huey, request.form.get("type") or None)
    audit.record(huey.storage, user.name, "jobs.retry_failed", job_ids=report["retried"], detail={
        "type": request.form.get("type") or None, "skipped": len(report["skipped"])})
    flash(dead_letters.describe_retry(report), "error" if report["skipped"] else "message")
    return redirect(url_for("admin.failed"))


@bp.post("/failed/purge")
@admin_page
def purge(user: User):
    count = dead_letters.purge_ended(huey.storage, artifact_store(),
                                     request.form.get("older_than", "30d"),
                                     request.form.get("status") or None)
    audit.record(huey.storage, user.name, "jobs.purge", count=count, detail=dict(
        older_than=request.form.get("older_than", "30d"), status=request.form.get("status")))
    flash(f"Purged {count} job(s).")
    shown = request.form.get("status")  # back to the tab it was sent from
    return redirect(url_for("admin.failed", status=shown if shown in dead_letters.RETRYABLE
                            and shown != "failed" else None))


def consumers_context() -> dict[str, Any]:
    """What the consumers page shows, for the page and for its live refresh."""
    return {"consumers": stats.consumers(huey.storage), "now": time.time(),
            "stale_after": current_app.config["QRQ"].alert_heartbeat_age}


@bp.get("/consumers")
@admin_page
def consumers(user: User):
    return render("admin/consumers.html", user, **consumers_context())


def _backup_sets() -> list[dict[str, Any]] | None:
    """The backup sets from qrq.backup's listing, newest first; None without one."""
    try:
        from qrq import backup
    except ImportError:
        return None
    lister = getattr(backup, "list_sets", None)
    if lister is None:
        return None
    try:
        return list(lister(current_app.config["QRQ"].backups_dir))[:100]
    except Exception as exc:  # a broken listing must not take the dashboard down
        current_app.logger.exception("backup listing failed")
        flash(f"The backup listing failed: {type(exc).__name__}", "error")
        return None


@bp.get("/backups")
@admin_page
def backups(user: User):
    """The backup sets with their per-database reports, and the backup jobs."""
    rows, _ = stats.search_jobs(huey.storage, name_contains="backup", limit=50)
    # On several hosts the sets are on the host that runs the backups, not a web host.
    directory = current_app.config["QRQ"].backups_dir
    return render("admin/backups.html", user, sets=_backup_sets(), rows=rows,
                  directory=directory, sets_here=directory.is_dir())


@bp.get("/progress.json")
@admin_page
def progress(user: User):
    """Status and progress of the listed jobs (``?ids=a,b``), for the progress bars."""
    ids = [i for i in request.args.get("ids", "").split(",") if i][:MAX_PROGRESS_IDS]
    if not all(jobs.JOB_ID.fullmatch(i) for i in ids):
        raise ValidationError("ids must be job ids, comma-separated", field="ids")
    return jsonify(jobs=stats.progress_of(huey.storage, ids))
