"""The job list's query arguments, checked and turned into listing filters, its sort
order, and the cursor of its pages."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from qrq.appdb.models import User
from qrq.errors import ValidationError
from qrq.queue import huey, stats
from qrq.web.paging import cursor_value, decode_cursor, encode_cursor

FIELDS = ("q", "type", "status", "owner", "worker", "from", "to", "sort", "order")
ORDERS = ("desc", "asc")
MAX_TEXT = 200


@dataclass
class Listing:
    """One validated job list request: the search filters, the sort, the page start,
    and the arguments as typed (shown back in the form and kept in every link)."""

    filters: dict[str, Any] = field(default_factory=dict)
    sort: str = "created"
    descending: bool = True
    after: tuple[float, str] | None = None
    shown: dict[str, str] = field(default_factory=dict)

    @property
    def query(self) -> str:
        """The filters and sort as a query string (no cursor): what every link keeps."""
        return urlencode({k: v for k, v in self.shown.items() if v})

    def position(self, last: dict[str, Any]) -> str:
        """The cursor of the page after the listed job *last*."""
        return cursor_of(last, self.sort, self.descending)


def cursor_of(last: dict[str, Any], sort: str = "created", descending: bool = True) -> str:
    """The cursor of the page after the listed job *last*, in that order."""
    return encode_cursor({"s": sort, "d": descending, "v": stats.sort_value(last, sort),
                          "id": last["id"]})


def _day(text: str, name: str) -> float:
    """Midnight UTC of a ``YYYY-MM-DD`` date, or the minute of ``YYYY-MM-DDTHH:MM``."""
    for form in ("%Y-%m-%d", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M"):
        try:
            moment = datetime.datetime.strptime(text, form)
        except ValueError:
            continue
        return moment.replace(tzinfo=datetime.UTC).timestamp()
    raise ValidationError("must be a date like 2026-11-22 (or 2026-11-22T14:30, UTC)",
                          field=name)


def _dates(shown: dict[str, str], filters: dict[str, Any]) -> None:
    if shown["from"]:
        filters["created_from"] = _day(shown["from"], "from")
    if shown["to"]:
        end = _day(shown["to"], "to")
        # A date alone includes its whole day; a time, its whole minute.
        filters["created_to"] = end + (86400 if len(shown["to"]) == 10 else 60)
    if filters.get("created_to") is not None and filters.get("created_from") is not None \
            and filters["created_to"] <= filters["created_from"]:
        raise ValidationError("must not be before from", field="to")


def _owner(name: str, filters: dict[str, Any]) -> None:
    if name == "-":
        filters["system"] = True
        return
    owner = User.get_or_none(User.name == name[:64])
    if owner is None:
        raise ValidationError(f"no user named {name[:64]!r}", field="owner")
    filters["owner_id"] = owner.id


def _choice(value: str, allowed, name: str) -> str:
    if value not in allowed:
        raise ValidationError(f"unknown {name} {value[:40]!r}; one of {', '.join(allowed)}",
                              field=name)
    return value


def job_filters(args) -> Listing:
    """The job list's query arguments, validated: :raises ValidationError: naming the
    argument that is wrong (unknown type, status, owner, sort; bad date or cursor)."""
    shown = {key: args.get(key, "").strip()[:MAX_TEXT] for key in FIELDS}
    if args.get("date") and not (shown["from"] or shown["to"]):  # one day, as before
        shown["from"] = shown["to"] = args["date"].strip()[:20]
    listing = Listing(shown=shown)
    filters = listing.filters
    if shown["type"]:
        filters["job_type"] = _choice(shown["type"], stats.job_types(huey.storage), "type")
    if shown["status"]:
        filters["queue_state"] = _choice(shown["status"], stats.QUEUE_STATES, "status")
    if shown["owner"]:
        _owner(shown["owner"], filters)
    if shown["worker"]:
        filters["worker"] = shown["worker"]
    _dates(shown, filters)
    if shown["q"]:
        filters["text"] = shown["q"]
    listing.sort = _choice(shown["sort"] or "created", tuple(stats.SORTS), "sort")
    listing.descending = _choice(shown["order"] or "desc", ORDERS, "order") == "desc"
    listing.after = read_cursor(args, listing.sort, listing.descending)
    return listing


def read_cursor(args, sort: str = "created", descending: bool = True) -> tuple | None:
    """The ``cursor`` argument as ``(sort value, job id)``, or None on the first page;
    a cursor of another sort order is a 422 on ``cursor``."""
    raw = args.get("cursor")
    if not raw:
        return None
    position = decode_cursor(raw)
    if position.get("s") != sort or position.get("d") is not descending:
        raise ValidationError("this page belongs to another sort order: start from the "
                              "first page", field="cursor")
    return (cursor_value(position, "v", (int, float), -2**53),
            cursor_value(position, "id", str))
