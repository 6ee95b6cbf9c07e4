"""What a time-based analytics report asks for: checked, normalised, and cut into buckets.

A :class:`ReportQuery` is the normalised form of a request's parameters: every
default filled in, dates aligned to whole buckets, names canonical. Two requests
that mean the same report get the same query and so the same :attr:`~ReportQuery.key`,
which is what the cache is keyed by.

Buckets are local calendar days, ISO weeks (Monday to Sunday) or months in the
query's time zone. Their boundaries are computed as UTC instants with zoneinfo,
so a day in a DST change has 23 or 25 hours and scans fall into the local day
they happened on.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from qrq import schedule
from qrq.errors import ValidationError

PERIODS = ("daily", "weekly", "monthly")
MAX_BUCKETS = 1000
# Without from/to: the last 30 days, 13 weeks or 12 months up to today.
DEFAULT_SPAN = {"daily": 30, "weekly": 13, "monthly": 12}
PARAMETERS = ("period", "domain", "template_id", "from", "to", "tz", "refresh")
_DOMAIN = re.compile(r"[a-z0-9.-]+")
_MIN_DATE, _MAX_DATE = datetime.date(1970, 1, 2), datetime.date(2100, 12, 31)


@dataclasses.dataclass(frozen=True)
class Bucket:
    label: str            # 2026-11-22, 2026-W47 or 2026-11
    start: datetime.date  # its first local date
    start_ts: int         # its first instant, Unix seconds (UTC)


@dataclasses.dataclass(frozen=True)
class ReportQuery:
    period: str
    tz: str
    start: datetime.date  # first local date of the first bucket
    end: datetime.date    # last local date of the last bucket (inclusive)
    domain: str | None = None
    template_id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"period": self.period, "tz": self.tz, "from": self.start.isoformat(),
                "to": self.end.isoformat(), "domain": self.domain,
                "template_id": self.template_id}

    @classmethod
    def from_dict(cls, params: Mapping[str, Any]) -> ReportQuery:
        """The query a :meth:`to_dict` describes (as stored with a job or a cache row)."""
        return parse_query({k: v for k, v in params.items() if v is not None})

    @property
    def key(self) -> str:
        """The cache key: a digest of the normalised parameters."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:32]

    def buckets(self) -> list[Bucket]:
        return plan_buckets(self)[0]


def parse_query(args: Mapping[str, Any], today: datetime.date | None = None,
                allowed: tuple[str, ...] = PARAMETERS) -> ReportQuery:
    """Check request parameters (strings, or the values :meth:`ReportQuery.to_dict`
    gives) and return the normalised query.

    *today* (the local date in the query's zone) fills in a missing ``to``.

    :raises ValidationError: naming the first bad parameter.
    """
    for name in args:
        if name not in allowed:
            raise ValidationError(f"unknown parameter; expected {', '.join(allowed)}",
                                  field=name)
    period = _text(args, "period") or "daily"
    if period not in PERIODS:
        raise ValidationError(f"must be one of {', '.join(PERIODS)}", field="period")
    tz_name = _text(args, "tz") or "UTC"
    tz = zone(tz_name)
    if tz is datetime.UTC:  # "utc", "UTC", "": one report, one cache key
        tz_name = "UTC"
    domain = _text(args, "domain")
    if domain is not None:
        domain = domain.lower().rstrip(".")
        if (len(domain) > 253 or not _DOMAIN.fullmatch(domain)
                or not all(0 < len(label) < 64 for label in domain.split("."))):
            raise ValidationError("must be a domain name like menu.qrcards.example",
                                  field="domain")
    template_id = args.get("template_id")
    if template_id is not None and template_id != "":
        template_id = _positive_int(template_id, "template_id")
    else:
        template_id = None

    today = today or datetime.datetime.now(tz).date()
    end = _date(args, "to") or today
    start = _date(args, "from") or _default_start(period, end)
    if start > end:
        raise ValidationError("must not be after to", field="from")
    query = ReportQuery(period, tz_name, _align_start(period, start),
                        _align_end(period, end), domain, template_id)
    count = _bucket_count(query)
    if count > MAX_BUCKETS:
        raise ValidationError(f"the range holds {count} {period} buckets; at most "
                              f"{MAX_BUCKETS} (shorten it or use a longer period)",
                              field="from")
    return query


def zone(name: str) -> datetime.tzinfo:
    """The time zone *name* (``UTC``, or an IANA name like ``Europe/Berlin``) by the
    rules of :func:`qrq.schedule.zone`, or a 422 naming ``tz``."""
    try:
        return schedule.zone(name)
    except ValueError as exc:
        raise ValidationError(str(exc), field="tz") from None


def plan_buckets(query: ReportQuery) -> tuple[list[Bucket], int]:
    """The query's buckets in order, and the UTC instant (Unix seconds) its range ends."""
    tz = zone(query.tz)
    buckets, day = [], query.start
    while day <= query.end:
        buckets.append(Bucket(_label(query.period, day), day, _local_midnight(day, tz)))
        day = _next_start(query.period, day)
    return buckets, _local_midnight(day, tz)


# -- helpers ----------------------------------------------------------------------------

def _text(args: Mapping[str, Any], name: str) -> str | None:
    value = args.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationError("must be a string", field=name)
    value = value.strip()
    if len(value) > 300:
        raise ValidationError("is too long", field=name)
    return value or None


def _positive_int(value: Any, field: str) -> int:
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,19}", value.strip()):
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**63:
        raise ValidationError("must be a positive integer", field=field)
    return value


def _date(args: Mapping[str, Any], name: str) -> datetime.date | None:
    text = _text(args, name)
    if text is None:
        return None
    if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", text):
        raise ValidationError("must be a date like 2026-11-22", field=name)
    try:
        day = datetime.date.fromisoformat(text)
    except ValueError:
        raise ValidationError("not a valid date", field=name) from None
    if not _MIN_DATE <= day <= _MAX_DATE:
        raise ValidationError(f"must be between {_MIN_DATE} and {_MAX_DATE}", field=name)
    return day


def _default_start(period: str, end: datetime.date) -> datetime.date:
    span = DEFAULT_SPAN[period]
    if period == "daily":
        return end - datetime.timedelta(days=span - 1)
    if period == "weekly":
        return end - datetime.timedelta(weeks=span - 1)
    months = end.year * 12 + end.month - 1 - (span - 1)
    return datetime.date(months // 12, months % 12 + 1, 1)


def _align_start(period: str, day: datetime.date) -> datetime.date:
    if period == "weekly":
        return day - datetime.timedelta(days=day.weekday())
    if period == "monthly":
        return day.replace(day=1)
    return day


def _align_end(period: str, day: datetime.date) -> datetime.date:
    if period == "daily":
        return day
    return _next_start(period, _align_start(period, day)) - datetime.timedelta(days=1)


def _next_start(period: str, start: datetime.date) -> datetime.date:
    if period == "daily":
        return start + datetime.timedelta(days=1)
    if period == "weekly":
        return start + datetime.timedelta(weeks=1)
    return (start.replace(day=28) + datetime.timedelta(days=4)).replace(day=1)


def _bucket_count(query: ReportQuery) -> int:
    days = (query.end - query.start).days + 1
    if query.period == "daily":
        return days
    if query.period == "weekly":
        return days // 7
    return ((query.end.year - query.start.year) * 12 + query.end.month
            - query.start.month + 1)


def _label(period: str, day: datetime.date) -> str:
    if period == "weekly":
        year, week, _ = day.isocalendar()
        return f"{year}-W{week:02d}"
    if period == "monthly":
        return day.strftime("%Y-%m")
    return day.isoformat()


def _local_midnight(day: datetime.date, tz: datetime.tzinfo) -> int:
    """The first instant of local *day*. Where midnight falls into a DST gap, fold=0
    resolves it with the offset before the change: the instant the day really begins."""
    return int(datetime.datetime(day.year, day.month, day.day, tzinfo=tz).timestamp())
