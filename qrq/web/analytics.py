"""Analytics endpoints: cached time-based reports, their jobs, and a chart.

``GET /api/analytics/time-based`` answers 200 with a fresh cached report, or 202
with the job computing it (identical requests share one job). The chart is an SVG
drawn on the server (``/api/analytics/time-based.svg``, Bearer token like every API
call); ``/analytics/chart`` is a static page, holding no data, that asks for the
token and shows that SVG. Every report is visible to every signed-in user: they
aggregate all QRCards scans, not one user's. A requester who cancels a shared job
withdraws only their own request (:mod:`qrq.analytics.requesters`).
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, render_template, request, url_for

from qrq.analytics import cache as analytics_cache
from qrq.analytics import requesters
from qrq.analytics.query import PARAMETERS, PERIODS, ReportQuery, parse_query
from qrq.analytics.submit import enqueue_report
from qrq.analytics.svg import render_chart
from qrq.errors import Conflict, NotFound, ValidationError
from qrq.queue import Admission, huey, jobs
from qrq.web.admission import analytics_quota, job_quota
from qrq.web.api import check_job_quota
from qrq.web.auth import current_user, login_required
from qrq.web.openapi_jobs import CURSOR, LINK_HEADER, NEXT, limit_param
from qrq.web.openapi_parts import errors_for, obj, schema_ref
from qrq.web.paging import cursor_value, paged, read_page

bp = Blueprint("analytics", __name__)

_TRUE, _FALSE = ("1", "true", "yes"), ("", "0", "false", "no")


def report_request() -> tuple[ReportQuery, dict[str, str], bool]:
    """The request's report query, its raw parameters (for the warm-up) and ``refresh``."""
    args = request.args.to_dict()  # each given once (qrq.web.params refuses repeats)
    refresh = args.pop("refresh", "").strip().lower()
    if refresh not in _TRUE + _FALSE:
        raise ValidationError("must be 0 or 1", field="refresh")
    query = parse_query(args, allowed=PARAMETERS)
    return query, args, refresh in _TRUE


def answer(render) -> tuple[Response, int] | Response:
    """A fresh report through *render*, or 202 with the job computing it."""
    query, raw, refresh = report_request()
    user = current_user()

    def start(job_id: str) -> None:  # only when this request starts a computation
        check_job_quota(analytics_quota())
        enqueue_report(query, job_id, user.id, Admission(max_active=job_quota(),
                                                         type_limit=analytics_quota()))

    outcome = analytics_cache.request_report(huey.storage, query, raw, start,
                                             refresh=refresh, requester=user.id)
    if outcome["status"] == "fresh":
        return render(outcome)
    status_url = url_for("analytics.job_status", job_id=outcome["job_id"])
    response = jsonify(job_id=outcome["job_id"], status="computing",
                       cache_key=outcome["cache_key"], status_url=status_url,
                       events_url=url_for("events.job_events", job_id=outcome["job_id"]),
                       params=query.to_dict())
    response.headers["Location"] = status_url
    response.headers["Retry-After"] = "1"
    return response, 202


def _freshness(outcome: dict[str, Any]) -> dict[str, Any]:
    age = round(max(0.0, time.time() - outcome["computed_at"]), 3)
    return {"computed_at": jobs.iso(outcome["computed_at"]), "age_seconds": age,
            "expires_at": jobs.iso(outcome["expires_at"])}


def _json(outcome: dict[str, Any]) -> Response:
    # The cached JSON object is answered as it is stored, with the freshness fields
    # appended: no decoding and re-encoding of a report on the hot path.
    extra = _freshness(outcome)
    body = outcome["result_json"].rstrip()[:-1] + "," + json.dumps(extra)[1:]
    response = Response(body, mimetype="application/json")
    response.headers["Age"] = str(int(extra["age_seconds"]))
    response.headers["Cache-Control"] = "private, no-cache"
    return response


def _svg(outcome: dict[str, Any]) -> Response:
    report = {**json.loads(outcome["result_json"]), **_freshness(outcome)}
    response = Response(render_chart(report), mimetype="image/svg+xml")
    response.headers["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'"
    response.headers["Cache-Control"] = "private, no-cache"
    return response


@bp.get("/api/analytics/time-based")
@login_required
def time_based():
    """Scans and unique visitors per day, week or month, with the range's top templates,
    domains, countries and devices: 200 from the cache, else 202 and a job id."""
    return answer(_json)


@bp.get("/api/analytics/time-based.svg")
@login_required
def time_based_svg():
    """The same report as an SVG line chart (202 JSON while it is being computed)."""
    return answer(_svg)


def _analytics_job(job_id: str) -> dict[str, Any]:
    job = jobs.get(huey.storage, job_id)
    if job is None or job["type"] != "analytics":
        raise NotFound(f"analytics job {job_id} not found")
    return job


def shared_view(job: dict[str, Any], user_id: int, admin: bool,
                status_url: str) -> dict[str, Any]:
    """An analytics job as *user_id* sees it: shared, canceled for a requester who
    withdrew. (Takes what it needs from the request: an event stream calls it after
    its request has ended.)"""
    view = jobs.public_view(job, admin=admin)
    if requesters.has_withdrawn(huey.storage, job["id"], user_id):
        view.update(status="canceled", error="canceled", result=None)
    view["status_url"] = status_url
    return view


@bp.get("/api/analytics/jobs/<job_id>")
@login_required
def job_status(job_id: str):
    """Status and progress of an analytics job, for any signed-in user (jobs are shared);
    canceled for a requester who withdrew."""
    user = current_user()
    return jsonify(shared_view(_analytics_job(job_id), user.id, user.is_admin,
                               url_for("analytics.job_status", job_id=job_id)))


@bp.delete("/api/analytics/jobs/<job_id>")
@login_required
def withdraw_job(job_id: str):
    """Cancel the caller's request for an analytics job: the job goes on for its other
    requesters and is canceled once none is left (an admin's ``DELETE /api/jobs/<id>``
    cancels it for everyone)."""
    job = _analytics_job(job_id)
    if job["status"] in jobs.ENDED:
        raise Conflict(f"job already {job['status']}")
    status = requesters.withdraw(huey.storage, job, current_user().id, huey.cancel)
    return jsonify(job_id=job_id, status=status), 202


@bp.get("/api/analytics/reports")
@login_required
def reports():
    """Cached reports, most requested first (parameters and freshness, no data)."""
    now = time.time()
    page = read_page(50, 200)  # limit + cursor (qrq.web.paging)
    offset = 0 if page.position is None else cursor_value(page.position, "o", int, 0, 10**6)
    found = analytics_cache.list_reports(huey.storage, offset + page.limit + 1)[offset:]
    more, found = found[page.limit:], found[:page.limit]
    for report in found:
        report["fresh"] = bool(report["expires_at"] and report["expires_at"] > now)
        for key in ("computed_at", "expires_at", "requested_at"):
            report[key] = jobs.iso(report[key])
    return paged({"reports": found, "limit": page.limit},
                 {"o": offset + page.limit} if more else None)


@bp.get("/analytics/chart")
def chart_page():
    """A page that draws a report's chart; it holds no data and fetches the SVG with the
    API token the user enters (kept in the browser's session storage). Admins have the
    same page in the dashboard (``/admin/analytics``), on their log-in."""
    nonce = secrets.token_urlsafe(16)
    settings = current_app.config["QRQ"]
    html = render_template("analytics_chart.html", nonce=nonce,
                           ttl=int(settings.analytics_cache_ttl))
    response = Response(html, mimetype="text/html")
    response.headers["Content-Security-Policy"] = (
        f"default-src 'none'; script-src 'self'; style-src 'nonce-{nonce}'; "
        "img-src 'self' blob: data:; connect-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'")
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


# -- the OpenAPI description of these routes (merged into qrq/web/openapi.py) -----------

_COUNT = {"type": "integer", "minimum": 0}
_JOB_ID = {"name": "job_id", "in": "path", "required": True,
           "schema": {"type": "string", "maxLength": 100}}
_TIME = {"type": "string", "format": "date-time"}
_PARAMETERS = [
    {"name": "period", "in": "query", "schema": {"type": "string", "enum": list(PERIODS)},
     "description": "Bucket size (default daily)."},
    {"name": "from", "in": "query", "schema": {"type": "string", "format": "date"},
     "description": "First local date (default: 30 days, 13 weeks or 12 months before "
                    "`to`); widened to a whole bucket."},
    {"name": "to", "in": "query", "schema": {"type": "string", "format": "date"},
     "description": "Last local date, inclusive (default: today in `tz`)."},
    {"name": "tz", "in": "query", "schema": {"type": "string", "maxLength": 64},
     "description": "IANA time zone of the buckets (default UTC)."},
    {"name": "domain", "in": "query", "schema": {"type": "string", "maxLength": 253},
     "description": "Only scans of this domain."},
    {"name": "template_id", "in": "query", "schema": {"type": "integer", "minimum": 1},
     "description": "Only scans of this template."},
    {"name": "refresh", "in": "query", "schema": {"type": "string", "enum": ["0", "1"]},
     "description": "1: recompute even if a fresh result is cached."},
]
_COMPUTING = {"description": "Being computed: follow `status_url`, then ask again.",
              "content": {"application/json": {"schema": schema_ref("AnalyticsComputing")}}}
# A report's answers other than 200: computing, or an error (429: too_many_jobs too).
_UNLESS_FRESH = {"202": _COMPUTING, **errors_for(422, 429)}
_TOP = {"type": "array", "items": {"type": "object", "required": ["scans"],
                                   "properties": {"scans": _COUNT}}}

OPENAPI_PATHS = {
    "/api/analytics/time-based": {"get": {
        "summary": "Scans and unique visitors per bucket, with the range's top lists",
        "operationId": "getTimeBasedAnalytics", "parameters": _PARAMETERS,
        "responses": {
            "200": {"description": "A fresh report from the cache.",
                    "content": {"application/json": {"schema": schema_ref("AnalyticsReport")}}},
            **_UNLESS_FRESH},
    }},
    "/api/analytics/time-based.svg": {"get": {
        "summary": "The same report as an SVG line chart",
        "operationId": "getTimeBasedAnalyticsChart", "parameters": _PARAMETERS,
        "responses": {
            "200": {"description": "An SVG document.",
                    "content": {"image/svg+xml": {"schema": {"type": "string"}}}},
            **_UNLESS_FRESH},
    }},
    "/api/analytics/jobs/{job_id}": {"get": {
        "summary": "An analytics job's status, for any signed-in user",
        "description": "`canceled` for a requester who withdrew their request.",
        "operationId": "getAnalyticsJob", "parameters": [_JOB_ID],
        "responses": {"200": {"description": "The job.", "content": {
            "application/json": {"schema": schema_ref("Job")}}}, **errors_for(404)},
    }, "delete": {
        "summary": "Withdraw the caller's request for a shared analytics job",
        "description": "The job goes on for its other requesters and is canceled once "
                       "none is left. 409 if the caller is not waiting for it or it "
                       "already ended.",
        "operationId": "withdrawAnalyticsJob", "parameters": [_JOB_ID],
        "responses": {"202": {"description": "Withdrawn.", "content": {
            "application/json": {"schema": obj({
                "job_id": {"type": "string"},
                "status": {"type": "string", "enum": list(jobs.STATES)}})}}},
            **errors_for(404, 409)},
    }},
    "/api/analytics/reports": {"get": {
        "summary": "Cached analytics reports, most requested first",
        "operationId": "listAnalyticsReports",
        "parameters": [limit_param(50, 200), CURSOR],
        "responses": {"200": {"description": "The reports (without their data).",
                              "headers": LINK_HEADER, "content": {
            "application/json": {"schema": obj({"reports": {
                "type": "array", "items": obj({
                    "cache_key": {"type": "string"}, "params": {"type": "object"},
                    "computed_at": {"type": ["string", "null"]},
                    "expires_at": {"type": ["string", "null"]},
                    "requests": _COUNT, "requested_at": _TIME,
                    "job_id": {"type": ["string", "null"]},
                    "fresh": {"type": "boolean"}})},
                "limit": {"type": "integer"}, "next": NEXT})}}},
            **errors_for(422)},
    }},
}

OPENAPI_SCHEMAS = {
    "AnalyticsComputing": obj({
        "job_id": {"type": "string", "format": "uuid"},
        "status": {"type": "string", "enum": ["computing"]},
        "cache_key": {"type": "string"}, "status_url": {"type": "string"},
        "events_url": {"type": "string"}, "params": {"type": "object"}}),
    "AnalyticsReport": obj({
        "params": {"type": "object"},
        "series": {"type": "array", "items": obj({
            "bucket": {"type": "string", "format": "date"}, "label": {"type": "string"},
            "start": _TIME, "scans": _COUNT, "visitors": _COUNT})},
        "totals": obj({"scans": _COUNT}),
        "top": obj({"templates": _TOP, "domains": _TOP, "countries": _TOP,
                        "devices": _TOP}),
        "databases": obj({"found": _COUNT, "read": _COUNT, "skipped": _COUNT}),
        "warnings": {"type": "array", "items": {"type": "string"}},
        "visitors": {"type": "string"}, "seconds": {"type": "number"},
        "cache_key": {"type": "string"}, "computed_at": _TIME,
        "age_seconds": {"type": "number"}, "expires_at": _TIME}),
}
