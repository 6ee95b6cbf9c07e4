"""The dashboard's blueprint and what every page shares: security headers, the
error page, the template filters and the render helper.

Every page works offline: the CSS, the charts (SVG drawn by the templates) and the
one small script that moves progress bars are served by the app itself.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

from flask import Blueprint, g, jsonify, render_template, request

from qrq.appdb.models import User
from qrq.errors import QrqError
from qrq.humanize import format_bytes
from qrq.queue import stats
from qrq.web.ops import web_alerts

bp = Blueprint("admin", __name__, url_prefix="/admin",
               static_folder=str(Path(__file__).resolve().parent.parent / "static"),
               static_url_path="/static")

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


@bp.after_request
def _security_headers(response):
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "same-origin"
    if request.endpoint != "admin.static":
        response.headers["Cache-Control"] = "no-store"
    return response


@bp.errorhandler(QrqError)
def _error_page(exc: QrqError):
    # As the API's errors (qrq.web.errors): a 503 says when to come back.
    retry_after = getattr(exc, "retry_after", None) or (60 if exc.status == 503 else None)
    headers = {"Retry-After": str(retry_after)} if retry_after else {}
    if request.path.endswith(".json"):
        return jsonify({"error": exc.to_dict()}), exc.status, headers
    if exc.status == 503:
        # The database is away (the session lives there too): the page shows no
        # session's buttons rather than look it up and fail again.
        g.setdefault("admin", None)
    return render_template("admin/error.html", error=exc), exc.status, headers


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
    return {"job_types": stats.JOB_TYPES, "states": stats.QUEUE_STATES}


def render(template: str, user: User | None, **context):
    """A dashboard page, with the alerts firing now for a logged-in admin."""
    firing = web_alerts() if user is not None else []
    return render_template(template, user=user, alerts=firing, **context)
