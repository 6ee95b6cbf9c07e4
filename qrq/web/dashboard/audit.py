"""The audit page: who did what, newest first, filtered by actor and action."""

from __future__ import annotations

from urllib.parse import urlencode

from flask import request

from qrq.appdb.models import User
from qrq.errors import ValidationError
from qrq.queue import audit, huey
from qrq.web.dashboard.blueprint import bp, render
from qrq.web.dashboard.session import admin_page
from qrq.web.params import int_arg

PAGE_SIZE = 50
# The ids a row shows before "and N more" (a retry-all may name a hundred).
SHOWN_IDS = 10


@bp.get("/audit")
@admin_page
def audit_log(user: User):
    """Every action taken on the dashboard, the admin API and the CLI, newest first."""
    shown = {key: request.args.get(key, "").strip() for key in ("actor", "action")}
    for key, value in shown.items():
        if len(value) > 100:
            raise ValidationError("too long", field=key)
    page = int_arg("page", 1, 1, 100_000)
    rows, total = audit.entries(huey.storage, shown["actor"] or None, shown["action"] or None,
                                limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)
    actors, actions = audit.actors_and_actions(huey.storage)
    return render("admin/audit.html", user, rows=rows, total=total, page=page,
                  pages=max(1, -(-total // PAGE_SIZE)), shown=shown, actors=actors,
                  actions=actions, shown_ids=SHOWN_IDS,
                  query=urlencode({k: v for k, v in shown.items() if v}))
