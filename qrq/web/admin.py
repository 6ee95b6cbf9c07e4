"""The admin dashboard: server-rendered pages under ``/admin``, for admins only.

Admins log in with their user name and API token (no passwords to store, reset
or leak: the token is already a 256-bit secret kept only as a hash, and
``qrq users reset-token`` ends every session made with the old one). The
session is Flask's signed cookie; every POST carries the session's CSRF token;
actions (retry, cancel, purge, logout) answer POST only. Every page works
offline: the CSS, the charts (SVG drawn here) and the one small script that
moves progress bars are served by the app itself.
"""

from __future__ import annotations

import datetime
import functools
import hmac
import json
import secrets
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from flask import (
    Blueprint,
    current_app,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    send_file,
    session,
    url_for,
)

from qrq import alerts
from qrq.appdb.models import User
from qrq.errors import Conflict, Forbidden, NotFound, QrqError, Unauthorized, ValidationError
from qrq.humanize import format_bytes
from qrq.queue import catalog, huey, jobs, stats
from qrq.queue.retention import parse_age, purge_jobs
from qrq.schedule import next_match

bp = Blueprint("admin", __name__, url_prefix="/admin", static_folder="static",
               static_url_path="/static")

SESSION_HOURS = 8
PAGE_SIZE = 50
MAX_BULK = 10_000
MAX_PROGRESS_IDS = 100
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


# -- session and CSRF --------------------------------------------------------------------

def session_admin() -> User | None:
    """The admin logged in to this session, or None.

    The session holds the user id, a hash of the token used to log in, and the
    login time; a reset token, a lost admin flag or an old login ends it.
    """
    user_id, token_hash = session.get("uid"), session.get("th")
    if not isinstance(user_id, int) or not isinstance(token_hash, str):
        return None
    if time.time() - session.get("at", 0) > SESSION_HOURS * 3600:
        return None
    user = User.get_or_none(User.id == user_id)
    if user is None or not user.is_admin or not hmac.compare_digest(user.token_hash,
                                                                    token_hash):
        return None
    return user


def csrf_token() -> str:
    """This session's CSRF token, created on first use."""
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return session["csrf"]


@bp.before_request
def _check_csrf() -> None:
    if request.method == "POST":
        sent = request.form.get("csrf_token", "") or request.headers.get("X-CSRF-Token", "")
        expected = session.get("csrf", "")
        if not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
            raise Forbidden("the form expired or did not come from this site; reload the "
                            "page and try again")


@bp.after_request
def _security_headers(response):
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    if request.endpoint != "admin.static":
        response.headers["Cache-Control"] = "no-store"
    return response


def admin_page(view: Callable) -> Callable:
    """Only for a logged-in admin: pages redirect to the login, the rest answer 401."""
    @functools.wraps(view)
    def wrapped(*args, **kwargs):
        user = session_admin()
        if user is None:
            if request.method == "GET" and not request.path.endswith(".json"):
                return redirect(url_for("admin.login", next=request.full_path.rstrip("?")))
            raise Unauthorized("log in to the dashboard first")
        return view(*args, user=user, **kwargs)
    return wrapped


def _safe_next(target: str | None) -> str:
    # Only a path inside the dashboard: never another site, nor "//host" or "\\".
    if target and (target == "/admin" or target.startswith(("/admin/", "/admin?"))) \
            and "\\" not in target:
        return target
    return url_for("admin.overview")


@bp.errorhandler(QrqError)
def _error_page(exc: QrqError):
    if request.path.endswith(".json"):
        return jsonify({"error": exc.to_dict()}), exc.status
    return render_template("admin/error.html", error=exc), exc.status


@bp.app_template_filter("when")
def _when(ts: float | None) -> str:
    if ts is None:
        return "—"
    moment = datetime.datetime.fromtimestamp(ts, datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


@bp.app_template_filter("duration")
def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


@bp.app_template_filter("filesize")
def _filesize(size: int | None) -> str:
    return "—" if size is None else format_bytes(size)


@bp.context_processor
def _globals() -> dict[str, Any]:
    return {"csrf_token": csrf_token, "job_types": stats.JOB_TYPES,
            "states": stats.QUEUE_STATES}


def _render(template: str, user: User | None, **context):
    from qrq.web.ops import web_alerts

    firing = web_alerts() if user is not None else []
    return render_template(template, user=user, alerts=firing, **context)


# -- login -------------------------------------------------------------------------------

@bp.get("/login")
def login():
    if session_admin() is not None:
        return redirect(_safe_next(request.args.get("next")))
    return render_template("admin/login.html", user=None, alerts=[],
                           next=_safe_next(request.args.get("next")), error=None)


@bp.post("/login")
def login_post():
    name = request.form.get("name", "").strip()[:64]
    token = request.form.get("token", "").strip()
    target = _safe_next(request.form.get("next"))
    user = User.from_token(token) if token and len(token) <= 200 else None
    # One message for every failure, so the form tells nothing about which part was wrong.
    if user is None or not hmac.compare_digest(user.name.encode(), name.encode()) \
            or not user.is_admin:
        return render_template("admin/login.html", user=None, alerts=[], next=target,
                               error="Wrong name or token, or not an admin."), 403
    session.clear()
    session.permanent = True
    session.update(uid=user.id, th=user.token_hash, at=time.time(),
                   csrf=secrets.token_urlsafe(32))
    return redirect(target)


@bp.post("/logout")
def logout():
    session.clear()
    flash("Logged out.")
    return redirect(url_for("admin.login"))


# -- charts ------------------------------------------------------------------------------

def bar_chart(values: list[tuple[str, list[tuple[str, float]]]], *, label: str,
              percent: bool = False, width: int = 720, height: int = 180) -> dict[str, Any]:
    """Geometry of a stacked bar chart, drawn as SVG by the template (no script).

    *values* holds ``(x label, [(css class, value), ...])`` per bar.
    """
    left, bottom, top = 44, 22, 10
    plot_w, plot_h = width - left - 6, height - bottom - top
    peak = 1.0 if percent else max([sum(v for _, v in stack) for _, stack in values] + [1])
    step = plot_w / max(1, len(values))
    bars, labels = [], []
    for i, (x_label, stack) in enumerate(values):
        x = left + i * step + 1
        y = top + plot_h
        for css, value in stack:
            h = plot_h * value / peak if peak else 0
            y -= h
            if h > 0:
                shown = f"{value * 100:.0f}%" if percent else f"{value:g}"
                bars.append({"x": round(x, 1), "y": round(y, 1), "w": round(step - 2, 1),
                             "h": round(h, 1), "css": css,
                             "title": f"{x_label}: {shown} {css.removeprefix('bar-')}"})
        if i % 6 == 0:
            labels.append({"x": round(x, 1), "text": x_label})
    ticks = [{"y": round(top + plot_h * (1 - f), 1),
              "text": f"{f * 100:.0f}%" if percent else f"{peak * f:g}"} for f in (0, 0.5, 1)]
    return {"width": width, "height": height, "bars": bars, "labels": labels, "ticks": ticks,
            "left": left, "base": top + plot_h, "label": label}


def _charts(now: float) -> dict[str, Any]:
    buckets = stats.throughput(huey.storage, now)

    def hour(b):
        return datetime.datetime.fromtimestamp(b["start"], datetime.UTC).strftime("%H:00")

    return {
        "throughput": bar_chart([(hour(b), [("bar-finished", b["finished"]),
                                            ("bar-failed", b["failed"])]) for b in buckets],
                                label="Jobs ended per hour, last 24 h (UTC)"),
        "failure_rate": bar_chart([(hour(b), [("bar-failed", b["failure_rate"] or 0)])
                                   for b in buckets], percent=True,
                                  label="Failure rate per hour, last 24 h (UTC)"),
        "totals": {status: sum(b[status] for b in buckets) for status in jobs.ENDED},
    }


# -- pages -------------------------------------------------------------------------------

@bp.get("/")
@admin_page
def overview(user: User):
    now = time.time()
    counts = stats.job_counts(huey.storage)
    return _render("admin/overview.html", user, counts=counts,
                   status=stats.queue_status(huey.storage, now, counts), charts=_charts(now),
                   last_check=alerts.last_check(huey.storage), now=now)


def _owner_names(rows: list[dict[str, Any]]) -> dict[int, str]:
    ids = {row["owner_id"] for row in rows if row.get("owner_id") is not None}
    if not ids:
        return {}
    return {u.id: u.name for u in User.select(User.id, User.name).where(User.id.in_(ids))}


def _job_filters(args) -> tuple[dict[str, Any], dict[str, str]]:
    """The job list's query arguments as :func:`stats.search_jobs` filters, validated."""
    filters: dict[str, Any] = {}
    shown = {key: args.get(key, "").strip() for key in ("type", "status", "owner", "date",
                                                         "q")}
    if shown["type"]:
        if len(shown["type"]) > 40:
            raise ValidationError("too long", field="type")
        filters["job_type"] = shown["type"]
    if shown["status"]:
        if shown["status"] not in stats.QUEUE_STATES:
            raise ValidationError(f"must be one of {', '.join(stats.QUEUE_STATES)}",
                                  field="status")
        filters["status"] = shown["status"]
    if shown["owner"]:
        if shown["owner"] == "-":
            filters["system"] = True
        else:
            owner = User.get_or_none(User.name == shown["owner"][:64])
            if owner is None:
                raise ValidationError(f"no user named {shown['owner'][:64]!r}", field="owner")
            filters["owner_id"] = owner.id
    if shown["date"]:
        try:
            day = datetime.datetime.strptime(shown["date"], "%Y-%m-%d").replace(
                tzinfo=datetime.UTC)
        except ValueError:
            raise ValidationError("must be a date like 2026-11-22", field="date") from None
        filters["created_from"] = day.timestamp()
        filters["created_to"] = day.timestamp() + 86400
    if shown["q"]:
        q = shown["q"].lower()
        if not all(c in "0123456789abcdef-" for c in q) or len(q) > 36:
            raise ValidationError("search by job id (or its first characters)", field="q")
        filters["id_prefix"] = q
    return filters, shown


def _page_number() -> int:
    raw = request.args.get("page", "1")
    if not raw.isdigit() or not 1 <= int(raw) <= 100_000:
        raise ValidationError("must be a page number", field="page")
    return int(raw)


@bp.get("/jobs")
@admin_page
def job_list(user: User):
    page = _page_number()
    try:
        filters, shown = _job_filters(request.args)
    except ValidationError as exc:
        shown = {key: request.args.get(key, "")[:64] for key in ("type", "status", "owner",
                                                                 "date", "q")}
        return _render("admin/jobs.html", user, rows=[], total=0, page=1, pages=1,
                       shown=shown, error=exc, owners={}, query=""), 422
    rows, total = stats.search_jobs(huey.storage, **filters, limit=PAGE_SIZE,
                                    offset=(page - 1) * PAGE_SIZE)
    if total == 1 and shown["q"] and len(shown["q"]) == 36:
        return redirect(url_for("admin.job_detail", job_id=rows[0]["id"]))
    query = urlencode({k: v for k, v in shown.items() if v})
    return _render("admin/jobs.html", user, rows=rows, total=total, page=page,
                   pages=max(1, -(-total // PAGE_SIZE)), shown=shown, error=None,
                   owners=_owner_names(rows), query=query)


def _get_job(job_id: str) -> dict[str, Any]:
    job = jobs.get(huey.storage, job_id)
    if job is None:
        raise NotFound(f"job {job_id[:64]} not found")
    return job


def _outputs(job_id: str) -> list[dict[str, Any]]:
    folder = current_app.config["QRQ"].artifacts_dir
    if not folder.is_dir():
        return []
    return [{"name": path.name, "bytes": path.stat().st_size}
            for path in sorted(folder.glob(f"{job_id}*")) if path.is_file()
            and not path.name.startswith(".")]


@bp.get("/jobs/<job_id>")
@admin_page
def job_detail(user: User, job_id: str):
    job = _get_job(job_id)
    view = jobs.public_view(job, admin=True)
    owner = User.get_or_none(User.id == job["owner_id"]) if job["owner_id"] else None
    now = time.time()
    began = job["started_at"] or job["finished_at"] or now
    timings = {"waited": max(0.0, began - job["created_at"]),
               "ran": max(0.0, (job["finished_at"] or now) - job["started_at"])
               if job["started_at"] else None}
    return _render("admin/job.html", user, job=job, view=view, owner=owner,
                   params=json.dumps(view["params"], indent=2, sort_keys=True),
                   result=json.dumps(view["result"], indent=2, sort_keys=True)
                   if view["result"] is not None else None,
                   timings=timings, outputs=_outputs(job["id"]),
                   ended=job["status"] in jobs.ENDED)


@bp.get("/jobs/<job_id>/files/<name>")
@admin_page
def job_file(user: User, job_id: str, name: str):
    job = _get_job(job_id)
    # Only names the listing produced: the path is never built from the request.
    for output in _outputs(job["id"]):
        if output["name"] == name:
            path = current_app.config["QRQ"].artifacts_dir / output["name"]
            return send_file(path, as_attachment=True, download_name=output["name"],
                             max_age=0)
    raise NotFound(f"job {job['id']} has no file {name[:100]}")


def _back(default: str) -> str:
    return _safe_next(request.form.get("next") or default)


@bp.post("/jobs/<job_id>/retry")
@admin_page
def retry_job(user: User, job_id: str):
    job = _get_job(job_id)
    try:
        huey.retry(job["id"])
    except Conflict as exc:
        flash(exc.message, "error")
    else:
        flash(f"Job {job['id']} queued again.")
    return redirect(_back(url_for("admin.job_detail", job_id=job["id"])))


@bp.post("/jobs/<job_id>/cancel")
@admin_page
def cancel_job(user: User, job_id: str):
    job = _get_job(job_id)
    if job["status"] in jobs.ENDED:
        flash(f"Job {job['id']} already {job['status']}.", "error")
    else:
        flash(f"Job {job['id']} is {huey.cancel(job['id'])}.")
    return redirect(_back(url_for("admin.job_detail", job_id=job["id"])))


@bp.get("/failed")
@admin_page
def failed(user: User):
    status = request.args.get("status", "failed")
    if status not in ("failed", "canceled", "expired"):
        raise ValidationError("must be failed, canceled or expired", field="status")
    page = _page_number()
    rows, total = stats.search_jobs(huey.storage, status=status, limit=PAGE_SIZE,
                                    offset=(page - 1) * PAGE_SIZE)
    return _render("admin/failed.html", user, rows=rows, total=total, status=status,
                   page=page, pages=max(1, -(-total // PAGE_SIZE)),
                   owners=_owner_names(rows))


@bp.post("/failed/retry-all")
@admin_page
def retry_all(user: User):
    job_type = request.form.get("type") or None
    if job_type is not None and len(job_type) > 40:
        raise ValidationError("too long", field="type")
    found = jobs.list_jobs(huey.storage, status="failed", job_type=job_type, limit=MAX_BULK)
    retried, skipped = 0, 0
    for job in found:
        try:
            huey.retry(job["id"])
            retried += 1
        except (Conflict, NotFound):
            skipped += 1
    flash(f"{retried} failed job(s) queued again" + (f", {skipped} skipped" if skipped
                                                     else "") + ".")
    return redirect(url_for("admin.failed"))


@bp.post("/failed/purge")
@admin_page
def purge(user: User):
    try:
        older_than = parse_age(request.form.get("older_than", "30d")[:20])
    except ValueError as exc:
        raise ValidationError(str(exc), field="older_than") from None
    status = request.form.get("status") or None
    if status is not None and status not in jobs.ENDED:
        raise ValidationError(f"must be one of {', '.join(jobs.ENDED)}", field="status")
    count = purge_jobs(huey.storage, current_app.config["QRQ"].artifacts_dir, older_than,
                       (status,) if status else jobs.ENDED)
    flash(f"Purged {count} job(s).")
    return redirect(url_for("admin.failed"))


def next_run(task, after: datetime.datetime, days: int = 8) -> datetime.datetime | None:
    """The first whole minute after *after* (naive UTC) that a periodic task runs at."""
    return next_match(task.validate_datetime, after, days)


def _periodic_tasks(now: float) -> list[dict[str, Any]]:
    after = datetime.datetime.fromtimestamp(now, datetime.UTC).replace(tzinfo=None)
    found = []
    for task in catalog.periodic_tasks(huey.settings):
        upcoming = next_run(task, after)
        job_type = getattr(task, "job_type", None)
        # Only periodic_job tasks leave job records; the type narrows the scan to an index.
        last = huey.storage.sql("select id, status, created_at from job where type = ? and "
                                "name = ? order by created_at desc limit 1",
                                (job_type, task.name), results=True) if job_type else []
        found.append({
            "name": task.name, "type": job_type,
            "next_run": upcoming.replace(tzinfo=datetime.UTC).timestamp()
            if upcoming else None,
            "priority": task.priority,
            "last": dict(zip(("id", "status", "created_at"), last[0], strict=True))
            if last else None,
        })
    checked = alerts.last_check(huey.storage)
    for item in found:
        if item["name"] == "alerts.check" and checked is not None and item["last"] is None:
            item["last"] = {"id": None, "status": "ran", "created_at": checked}
    return found


@bp.get("/schedule")
@admin_page
def schedule(user: User):
    now = time.time()
    scheduled = []
    for task in huey.scheduled(limit=500):
        eta = task.eta.replace(tzinfo=datetime.UTC).timestamp() if task.eta else None
        scheduled.append({"id": task.id, "name": task.name, "eta": eta,
                          "retries": task.retries})
    known = {job_id for job_id, in huey.storage.sql(
        f"select id from job where id in ({','.join('?' * len(scheduled))})",
        [s["id"] for s in scheduled], results=True)} if scheduled else set()
    return _render("admin/schedule.html", user, scheduled=scheduled, known=known,
                   periodic=_periodic_tasks(now), now=now,
                   total=stats.schedule_size(huey.storage))


@bp.get("/consumers")
@admin_page
def consumers(user: User):
    return _render("admin/consumers.html", user, consumers=stats.consumers(huey.storage),
                   stale_after=current_app.config["QRQ"].alert_heartbeat_age)


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
    return _render("admin/backups.html", user, sets=_backup_sets(), rows=rows)


@bp.get("/progress.json")
@admin_page
def progress(user: User):
    """Status and progress of the listed jobs (``?ids=a,b``), for the progress bars."""
    ids = [i for i in request.args.get("ids", "").split(",") if i][:MAX_PROGRESS_IDS]
    if not all(jobs.JOB_ID.fullmatch(i) for i in ids):
        raise ValidationError("ids must be job ids, comma-separated", field="ids")
    return jsonify(jobs=stats.progress_of(huey.storage, ids))

