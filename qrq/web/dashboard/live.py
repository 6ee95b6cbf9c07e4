"""The live refresh of the overview, the job list, the consumers and the alert banners:
JSON polled by ``static/live.js`` (only while the tab is visible), holding the same
parts of the page rendered again by the same templates, so a live page and a reloaded
one agree.

Each poll runs the page's own indexed queries; the job list's asks only for jobs
created in the last seconds and for the rows it shows that have not ended.
"""

from __future__ import annotations

import math
import time

from flask import jsonify, render_template, request

from qrq.appdb.models import User
from qrq.errors import ValidationError
from qrq.queue import huey, jobs, stats
from qrq.web.dashboard.blueprint import bp
from qrq.web.dashboard.filters import job_filters
from qrq.web.dashboard.pages import (
    NEW_JOB_SLACK,
    consumers_context,
    overview_context,
    rows_context,
)
from qrq.web.dashboard.session import admin_page
from qrq.web.ops import web_alerts

MAX_IDS = 100
MAX_NEW = 50


@bp.get("/overview.json")
@admin_page
def overview_live(user: User):
    """The overview's counters, charts, running jobs and consumers, as HTML."""
    context = overview_context()
    return jsonify(now=context["now"],
                   html=render_template("admin/_overview_live.html", **context))


@bp.get("/alerts.json")
@admin_page
def alerts_live(user: User):
    """The alert banners every page shows, as HTML: a page left open shows an alert
    that starts firing, and drops one that stopped."""
    return jsonify(now=time.time(),
                   html=render_template("admin/_alerts.html", alerts=web_alerts()))


@bp.get("/consumers.json")
@admin_page
def consumers_live(user: User):
    """The consumers with their heartbeats and running jobs, as HTML."""
    context = consumers_context()
    return jsonify(now=context["now"],
                   html=render_template("admin/_consumers_live.html", **context))


def _since() -> float | None:
    raw = request.args.get("since")
    if raw in (None, ""):
        return None
    try:
        since = float(raw[:30])
    except ValueError:
        since = math.nan
    if not math.isfinite(since):
        raise ValidationError("must be a time in Unix seconds", field="since")
    return since


def _ids() -> list[str]:
    ids = [i for i in request.args.get("ids", "").split(",") if i][:MAX_IDS]
    if not all(jobs.JOB_ID.fullmatch(i) for i in ids):
        raise ValidationError("ids must be job ids, comma-separated", field="ids")
    return ids


@bp.get("/jobs.json")
@admin_page
def jobs_live(user: User):
    """The job list's news: rows of jobs matching its filters created since ``since``
    (newest first), and the rows of the listed jobs ``ids`` as they are now."""
    listing = job_filters(request.args)
    since, ids = _since(), _ids()
    now = time.time()
    new = []
    if since is not None:
        filters = dict(listing.filters)
        filters["created_from"] = max(since, filters.get("created_from") or since)
        new, _ = stats.search_jobs(huey.storage, **filters, limit=MAX_NEW, with_total=False)
    changed = stats.jobs_by_id(huey.storage, ids)
    # A listed job whose status left the list's (a retrying job canceled): its row goes.
    state = listing.filters.get("queue_state")
    stored = "queued" if state == "scheduled" else state
    gone = [row["id"] for row in changed if stored and row["status"] != stored]
    changed = [row for row in changed if row["id"] not in gone]
    return jsonify(
        now=now, since=now - NEW_JOB_SLACK, gone=gone,
        new=render_template("admin/_job_rows.html", **rows_context(new)) if new else "",
        changed=render_template("admin/_job_rows.html", **rows_context(changed))
        if changed else "")
