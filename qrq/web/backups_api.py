"""``GET /api/admin/backups``: the backup sets, newest first, paged like every list."""

from __future__ import annotations

from flask import Blueprint, current_app

from qrq import backup
from qrq.web.auth import admin_required, login_required
from qrq.web.paging import choice_arg, cursor_value, paged, read_page

bp = Blueprint("backups_api", __name__, url_prefix="/api/admin")

KINDS = ("manual", "scheduled", "catch-up", "safety")
STATUSES = ("ok", "partial", "failed")


@bp.get("/backups")
@login_required
@admin_required
def list_backups():
    """Backup set manifests (without their per-database entries), newest first;
    filter by ``kind`` and ``status``."""
    kind, status = choice_arg("kind", KINDS), choice_arg("status", STATUSES)
    page = read_page(50, 200)
    directory = current_app.config["QRQ"].backups_dir
    sets = [m for m in backup.list_sets(directory)
            if (kind is None or m.get("kind") == kind)
            and (status is None or m.get("status") == status)]
    if page.position is not None:
        after = (cursor_value(page.position, "t", str), cursor_value(page.position, "id", str))
        sets = [m for m in sets if (m["created_at"], m["id"]) < after]
    shown, more = sets[:page.limit], sets[page.limit:]
    rows = [{k: v for k, v in m.items() if k != "databases"}
            | {"databases": [e.get("name") for e in m.get("databases", [])]} for m in shown]
    # An empty list from a web host that keeps none is not "no backups": it says so.
    return paged({"backups": rows, "limit": page.limit, "sets_here": directory.is_dir()},
                 {"t": shown[-1]["created_at"], "id": shown[-1]["id"]} if more else None)
