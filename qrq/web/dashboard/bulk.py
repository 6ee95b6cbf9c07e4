"""Acting on the jobs selected in a list: retry, cancel or discard them.

The list's form sends the action and the ids in a GET to ``/bulk/confirm`` (every
action's own URL answers 405 to a GET): a page that says what will happen to how many
jobs (and which will be skipped, and why), whose button posts them with ``confirm``;
the POST acts and sends the browser back to the list. (Asking in a GET, the browser's
Back returns to the question without resending a form.) Each action is the one bulk
operation of :mod:`qrq.queue.dead_letters`, which runs the single-job operation over
the ids and reports the jobs it skipped with the reason.
"""

from __future__ import annotations

from typing import Any

from flask import flash, redirect, request, url_for

from qrq.appdb.models import User
from qrq.errors import Conflict, ValidationError
from qrq.queue import audit, dead_letters, huey, jobs, stats
from qrq.web.dashboard.blueprint import bp, render
from qrq.web.dashboard.pages import owner_names
from qrq.web.dashboard.session import admin_page, safe_next
from qrq.web.downloads import artifact_store

MAX_SELECTED = 500
# What each action does, in the words of the confirmation and of the report.
VERBS = {"retry": ("Retry", "queued again"), "cancel": ("Cancel", "canceled"),
         "discard": ("Discard", "discarded")}
EFFECTS = {
    "retry": "They run again under the same ids, from the start, with their retries reset.",
    "cancel": "Queued jobs stop at once; running jobs stop at their next progress report.",
    "discard": "Their records, results and files are deleted for good.",
}
REFUSALS = {"retry": "only failed, canceled or expired jobs can be retried",
            "cancel": "it has ended already",
            "discard": "only ended jobs can be discarded (cancel it first)"}


def _selection(values) -> tuple[str, str, list[str]]:
    """Where to go back to, the action and the job ids in *values* (the query's or
    the form's)."""
    back = safe_next(values.get("next") or url_for("admin.job_list"))
    action = values.get("action", "")
    if action not in dead_letters.ACTIONS:
        raise ValidationError(f"must be one of {', '.join(dead_letters.ACTIONS)}",
                              field="action")
    ids = list(dict.fromkeys(values.getlist("id")))  # once each, in order
    if len(ids) > MAX_SELECTED:
        raise ValidationError(f"select at most {MAX_SELECTED} jobs at once", field="id")
    if not all(jobs.JOB_ID.fullmatch(i) for i in ids):
        raise ValidationError("must be job ids", field="id")
    if not ids:
        flash("Select at least one job first.", "error")
    return back, action, ids


def _question(action: str, going: list[dict[str, Any]]) -> str:
    """"Retry 3 failed jobs?": the verb, the count and, when they share it, the status."""
    statuses = {job["status"] for job in going}
    status = f" {statuses.pop()}" if len(statuses) == 1 else ""
    return f"{VERBS[action][0]} {len(going)}{status} job{'s' if len(going) != 1 else ''}?"


def _refusal(action: str, job: dict[str, Any]) -> str | None:
    """Why the action would skip *job*, as the action itself would (None: it acts)."""
    if job["status"] not in dead_letters.ACTIONS[action]:
        return f"{job['status']}: {REFUSALS[action]}"
    if action == "retry":
        try:
            huey.stored_message(job)
        except Conflict as exc:
            return exc.message
    return None


def _run(action: str, ids: list[str]) -> dict[str, list[Any]]:
    if action == "retry":
        return dead_letters.retry_jobs(huey, ids)
    if action == "cancel":
        return dead_letters.cancel_jobs(huey, ids)
    return dead_letters.discard_jobs(huey.storage, artifact_store(), ids)


@bp.get("/bulk/confirm")
@admin_page
def bulk_question(user: User):
    """What the action would do to the selected jobs, with the button that does it."""
    back, action, ids = _selection(request.args)
    if not ids:
        return redirect(back)
    found = {job["id"]: job for job in stats.jobs_by_id(huey.storage, ids)}
    going, staying = [], []
    for i in ids:
        job = found.get(i)
        reason = _refusal(action, job) if job else "no such job"
        if reason:
            staying.append({"job_id": i, "job": job, "reason": reason})
        else:
            going.append(job)
    return render("admin/bulk.html", user, action=action, verb=VERBS[action][0],
                  question=_question(action, going), effect=EFFECTS[action], going=going,
                  staying=staying, owners=owner_names(going), back=back)


@bp.post("/bulk")
@admin_page
def bulk_action(user: User):
    """Run the action on the selected jobs (``confirm``), then back to the list."""
    back, action, ids = _selection(request.form)
    if not ids:
        return redirect(back)
    if request.form.get("confirm") != "yes":  # a list page loaded before the question was a GET
        return redirect(url_for("admin.bulk_question", action=action, id=ids, next=back), 303)
    report = _run(action, ids)
    audit.record(huey.storage, user.name, f"jobs.{action}", job_ids=report["done"],
                 detail={"selected": len(ids), "skipped": len(report["skipped"])})
    flash(dead_letters.describe(f"{len(report['done'])} job(s) {VERBS[action][1]}", report),
          "error" if report["skipped"] else "message")
    return redirect(back)
