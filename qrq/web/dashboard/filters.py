"""The job list's query arguments, checked and turned into listing filters."""

from __future__ import annotations

import datetime
from typing import Any

from qrq.appdb.models import User
from qrq.errors import ValidationError
from qrq.queue import stats
from qrq.web.params import int_arg

FIELDS = ("type", "status", "owner", "date", "q")


def job_filters(args) -> tuple[dict[str, Any], dict[str, str]]:
    """The job list's query arguments as :func:`stats.search_jobs` filters, validated."""
    filters: dict[str, Any] = {}
    shown = {key: args.get(key, "").strip() for key in FIELDS}
    if shown["type"]:
        if len(shown["type"]) > 40:
            raise ValidationError("too long", field="type")
        filters["job_type"] = shown["type"]
    if shown["status"]:
        if shown["status"] not in stats.QUEUE_STATES:
            raise ValidationError(f"must be one of {', '.join(stats.QUEUE_STATES)}",
                                  field="status")
        filters["queue_state"] = shown["status"]
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


def page_number() -> int:
    """The ``page`` query parameter, 1 when absent."""
    return int_arg("page", 1, 1, 100_000)
