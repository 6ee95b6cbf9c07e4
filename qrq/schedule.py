"""Schedules: time zones and five-field crontabs, read as huey's scheduler reads them.

One rule set for time-zone names (settings, schedules, analytics) and one cron
search for both directions: the last due minute (catch-up of a missed run) and
the next one (the dashboard). The search walks months, days, hours and minutes
rather than single minutes, so a yearly schedule is found as quickly as an
hourly one and no horizon is needed.
"""

from __future__ import annotations

import calendar
import datetime
import re
import zoneinfo
from collections.abc import Callable, Iterator

# A search that finds nothing in 400 years (the Gregorian calendar's full cycle,
# so weekday and date repeat) never will: "0 0 30 2 *" names no real day.
_CYCLE_YEARS = 400
_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day", 1, 31), ("month", 1, 12),
           ("weekday", 0, 7))
_RANGE = re.compile(r"(\d+)-(\d+)(?:/(\d+))?", re.ASCII)
_EVERY = re.compile(r"\*/(\d+)", re.ASCII)


def zone(name: str) -> datetime.tzinfo:
    """The time zone *name*: ``UTC`` (or empty) or an IANA name like ``Europe/Berlin``.

    :raises ValueError: not a time-zone name, with a message saying what is expected.
    """
    name = name.strip()
    if name.upper() in ("", "UTC"):
        return datetime.UTC
    # ZoneInfo reads files: a name is never a path.
    if len(name) > 64 or name.startswith(("/", ".")) or ".." in name or "\\" in name:
        raise ValueError(f"{name[:70]!r} is not a time zone name like Europe/Berlin")
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"unknown time zone {name!r}; use UTC or an IANA name like "
                         "Europe/Berlin") from None


def _expand(piece: str, name: str, low: int, high: int) -> set[int]:
    if piece == "*":
        return set(range(low, high + 1))
    if piece.isascii() and piece.isdigit():
        values = [int(piece)]
    elif match := _RANGE.fullmatch(piece):
        first, last, step = int(match[1]), int(match[2]), int(match[3] or 1)
        if step < 1:
            raise ValueError(f"{name}: step 0 in {piece!r}")
        for value in (first, last):
            if not low <= value <= high:
                raise ValueError(f"{name}: {value} is outside {low}-{high}")
        top = 6 if name == "weekday" else high  # huey wraps a weekday range at Saturday
        values = (list(range(first, last + 1)) if first <= last else
                  list(range(first, top + 1)) + list(range(low, last + 1)))[::step]
    elif (match := _EVERY.fullmatch(piece)) and name != "weekday":
        step = int(match[1])
        if step < 1:
            raise ValueError(f"{name}: step 0 in {piece!r}")
        values = list(range(low, high + 1, step))
    else:
        raise ValueError(f"{name}: {piece!r} is not a value, a range or */N")
    for value in values:
        if not low <= value <= high:
            raise ValueError(f"{name}: {value} is outside {low}-{high}")
    return {v % 7 for v in values} if name == "weekday" else set(values)


class Cron:
    """A crontab ``minute hour day month weekday`` (weekday 0 or 7 = Sunday) in a zone.

    Every field must match, as in huey's ``crontab`` (not cron's day-or-weekday
    rule). Local times that a daylight-saving change skips never match; those it
    repeats match twice, as a wall clock shows them.
    """

    def __init__(self, expr: str, tz: datetime.tzinfo = datetime.UTC):
        fields = expr.split()
        if len(fields) != 5:
            raise ValueError(f"expected 5 crontab fields (M H DOM MON DOW), got {expr!r}")
        self.expr, self.tz = " ".join(fields), tz
        self.minutes, self.hours, self.days, self.months, self.weekdays = (
            sorted(set().union(*(_expand(p, name, low, high) for p in field.split(","))))
            for field, (name, low, high) in zip(fields, _FIELDS, strict=True))

    def matches(self, local: datetime.datetime) -> bool:
        """Whether the wall-clock minute *local* (naive, in this zone) is due."""
        return (local.minute in self.minutes and local.hour in self.hours
                and local.day in self.days and local.month in self.months
                and local.isoweekday() % 7 in self.weekdays)

    def __call__(self, utc_naive: datetime.datetime) -> bool:
        """huey's ``validate_datetime``: is the minute of this naive UTC time due?"""
        local = utc_naive.replace(tzinfo=datetime.UTC).astimezone(self.tz)
        return self.matches(local.replace(tzinfo=None))

    def _days(self, start: datetime.date, forward: bool) -> Iterator[datetime.date]:
        """Matching dates from *start* on (or back), month by month, for one cycle."""
        year, month = start.year, start.month
        for _ in range(_CYCLE_YEARS * 12):
            if month in self.months:
                last = calendar.monthrange(year, month)[1]
                days = [d for d in self.days if d <= last]
                for day in days if forward else reversed(days):
                    date = datetime.date(year, month, day)
                    if (date >= start if forward else date <= start) and \
                            date.isoweekday() % 7 in self.weekdays:
                        yield date
            year, month = divmod(year * 12 + month - 1 + (1 if forward else -1), 12)
            month += 1

    def _instants(self, local: datetime.datetime) -> list[float]:
        """The Unix times the wall-clock minute *local* happens at: none, one or two."""
        found = []
        for fold in (0, 1):
            moment = local.replace(tzinfo=self.tz, fold=fold).timestamp()
            back = datetime.datetime.fromtimestamp(moment, self.tz).replace(tzinfo=None)
            if back == local and moment not in found:
                found.append(moment)
        return found

    def _search(self, now: float, forward: bool) -> float | None:
        # Step a day to each side of the local date: a UTC offset moves it at most that far.
        here = datetime.datetime.fromtimestamp(now, self.tz).date()
        start = here + datetime.timedelta(days=-1 if forward else 1)
        for date in self._days(start, forward):
            for hour in self.hours if forward else reversed(self.hours):
                for minute in self.minutes if forward else reversed(self.minutes):
                    local = datetime.datetime(date.year, date.month, date.day, hour, minute)
                    for moment in sorted(self._instants(local), reverse=not forward):
                        if moment > now if forward else moment <= now:
                            return moment
        return None

    def last_at_or_before(self, now: float) -> float | None:
        """The latest due minute at or before the Unix time *now*; None if none ever was."""
        return self._search(now, forward=False)

    def next_after(self, now: float) -> float | None:
        """The first due minute after the Unix time *now*; None if none ever will be."""
        return self._search(now, forward=True)


def cron(expr: str, tz: datetime.tzinfo = datetime.UTC) -> Cron | None:
    """*expr* as a :class:`Cron`, or None when empty (a schedule that is off).

    :raises ValueError: not a five-field crontab.
    """
    return Cron(expr, tz) if expr.strip() else None


def due_now(expr: str, tz: datetime.tzinfo, utc_naive: datetime.datetime) -> bool:
    """Whether *expr* (in *tz*) matches the minute of huey's naive-UTC timestamp."""
    schedule = cron(expr, tz)
    return schedule is not None and schedule(utc_naive)


def last_due(expr: str, tz: datetime.tzinfo, now: float) -> float | None:
    """The latest minute at or before *now* (a Unix time) that *expr* matches in *tz*."""
    schedule = cron(expr, tz)
    return None if schedule is None else schedule.last_at_or_before(now)


def next_due(expr: str, tz: datetime.tzinfo, now: float) -> float | None:
    """The first minute after *now* (a Unix time) that *expr* matches in *tz*."""
    schedule = cron(expr, tz)
    return None if schedule is None else schedule.next_after(now)


def next_match(validate: Callable[[datetime.datetime], bool], after: datetime.datetime,
               days: int) -> datetime.datetime | None:
    """The first whole minute after *after* (naive UTC) that a huey ``validate_datetime``
    function accepts, probing minutes as huey's scheduler does; None beyond *days*.

    A function can only be probed; a :class:`Cron` is searched without a horizon.
    """
    if isinstance(validate, Cron):
        found = validate.next_after(after.replace(tzinfo=datetime.UTC).timestamp())
        return None if found is None else \
            datetime.datetime.fromtimestamp(found, datetime.UTC).replace(tzinfo=None)
    moment = after.replace(second=0, microsecond=0) + datetime.timedelta(minutes=1)
    for _ in range(days * 1440):
        if validate(moment):
            return moment
        moment += datetime.timedelta(minutes=1)
    return None
