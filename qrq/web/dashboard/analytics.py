"""The analytics chart in the dashboard, on the admin's log-in: no API token to enter.

The page is the public chart page's form (``static/analytics.js`` drives both); its
requests go to the endpoints below, which answer exactly as the API's
(:mod:`qrq.web.analytics`) with the session's admin as the caller. They may start a
computation, so besides the session they want the session's CSRF token in the
``X-CSRF-Token`` header, as a form would send it.
"""

from __future__ import annotations

import functools
import hmac
from collections.abc import Callable

from flask import current_app, g, request, session, url_for

from qrq.appdb.models import User
from qrq.errors import Forbidden, Unauthorized
from qrq.web import analytics as analytics_api
from qrq.web.dashboard.blueprint import bp, render
from qrq.web.dashboard.session import admin_page, csrf_token, session_admin


@bp.get("/analytics")
@admin_page
def analytics(user: User):
    return render("admin/analytics.html", user,
                  ttl=int(current_app.config["QRQ"].analytics_cache_ttl),
                  report_url=url_for("admin.analytics_report"),
                  svg_url=url_for("admin.analytics_svg"),
                  job_url=url_for("admin.analytics_job", job_id="JOB_ID"),
                  csrf=csrf_token())


def _as_session_admin(view: Callable) -> Callable:
    """Run an API view with the session's admin as its caller (never a redirect: these
    are fetched by a script)."""
    @functools.wraps(view)
    def wrapped(*args, **kwargs):
        user = session_admin()
        if user is None:
            raise Unauthorized("log in to the dashboard first")
        sent = request.headers.get("X-CSRF-Token", "")
        expected = session.get("csrf", "")
        if not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
            raise Forbidden("send the page's CSRF token in X-CSRF-Token; reload the page")
        g.user = user  # what qrq.web.auth.current_user answers for this request
        return view(*args, **kwargs)
    return wrapped


@bp.get("/analytics/time-based.json")
@_as_session_admin
def analytics_report():
    return analytics_api.time_based()


@bp.get("/analytics/time-based.svg")
@_as_session_admin
def analytics_svg():
    return analytics_api.time_based_svg()


@bp.get("/analytics/jobs/<job_id>.json")
@_as_session_admin
def analytics_job(job_id: str):
    return analytics_api.job_status(job_id)
