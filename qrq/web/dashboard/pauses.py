"""Pausing and resuming job types from the dashboard (CSRF-checked POSTs, like every
dashboard action); the overview lists every type with its state."""

from __future__ import annotations

from typing import Any

from flask import flash, redirect, request, url_for

from qrq.appdb.models import User
from qrq.queue import huey, pauses
from qrq.web.dashboard.blueprint import bp
from qrq.web.dashboard.session import admin_page, safe_next


def _back():
    return redirect(safe_next(request.form.get("next"))
                    if request.form.get("next") else url_for("admin.overview") + "#pauses")


@bp.post("/types/<job_type>/pause")
@admin_page
def pause_type(user: User, job_type: str):
    flash(pauses.describe(pauses.pause(huey.storage, job_type, user.name)))
    return _back()


@bp.post("/types/<job_type>/resume")
@admin_page
def resume_type(user: User, job_type: str):
    flash(pauses.describe(pauses.resume(huey.storage, job_type)))
    return _back()


@bp.context_processor
def _pause_states() -> dict[str, Any]:
    # A function, so only the pages that show the states read them.
    return {"pause_states": lambda: pauses.states(huey.storage)}
