"""The schedule page: periodic tasks with their next and last runs (each can be run
now), and the tasks waiting in huey's schedule."""

from __future__ import annotations

import datetime
import time
from typing import Any

from flask import flash, redirect, request, url_for

from qrq import alerts
from qrq.appdb.models import User
from qrq.errors import ValidationError
from qrq.queue import audit, catalog, huey, run_periodic_now, stats
from qrq.schedule import next_match
from qrq.web.dashboard.blueprint import bp, render
from qrq.web.dashboard.session import admin_page, safe_next


def next_run(task, after: datetime.datetime, days: int = 8) -> datetime.datetime | None:
    """The first whole minute after *after* (naive UTC) that a periodic task runs at."""
    return next_match(task.validate_datetime, after, days)


def _periodic_tasks(now: float) -> list[dict[str, Any]]:
    after = datetime.datetime.fromtimestamp(now, datetime.UTC).replace(tzinfo=None)
    found = []
    for task in catalog.periodic_tasks(huey.settings):
        upcoming = next_run(task, after)
        job_type = getattr(task, "job_type", None)
        # Only periodic_job tasks leave job records.
        last = stats.periodic_last_run(huey.storage, job_type, task.name) if job_type else None
        found.append({
            "name": task.name, "type": job_type,
            "next_run": upcoming.replace(tzinfo=datetime.UTC).timestamp()
            if upcoming else None,
            "priority": task.priority,
            "last": last,
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
    known = stats.existing_job_ids(huey.storage, [s["id"] for s in scheduled])
    return render("admin/schedule.html", user, scheduled=scheduled, known=known,
                  periodic=_periodic_tasks(now), now=now,
                  total=stats.schedule_size(huey.storage))


@bp.post("/schedule/<name>/run")
@admin_page
def run_periodic(user: User, name: str):
    """Queue a run of a periodic task now (the API's ``POST /api/admin/schedule/<name>/run``)."""
    try:
        job_id = run_periodic_now(name, params={"requested_by": user.name})
    except ValidationError as exc:
        flash(exc.message, "error")
    else:
        audit.record(huey.storage, user.name, "schedule.run", job_ids=[job_id],
                     detail={"task": name})
        flash(f"{name} queued now as job {job_id[:8]}; its schedule goes on.")
    return redirect(safe_next(request.form.get("next") or url_for("admin.schedule")))
