"""Report parameters: validation, normalisation, cache keys, and DST-correct buckets."""

import datetime

import pytest

from qrq.analytics.query import MAX_BUCKETS, ReportQuery, parse_query, plan_buckets
from qrq.errors import ValidationError

TODAY = datetime.date(2026, 11, 22)  # a Sunday


def hours(query):
    buckets, end = plan_buckets(query)
    starts = [b.start_ts for b in buckets] + [end]
    return [(b - a) / 3600 for a, b in zip(starts, starts[1:], strict=False)]


def test_defaults_are_the_last_30_days_in_utc():
    query = parse_query({}, today=TODAY)
    assert query.to_dict() == {"period": "daily", "tz": "UTC", "from": "2026-10-24",
                               "to": "2026-11-22", "domain": None, "template_id": None}
    assert len(query.buckets()) == 30


def test_weeks_run_monday_to_sunday_and_months_are_whole():
    weekly = parse_query({"period": "weekly", "from": "2026-11-04", "to": "2026-11-18"},
                         today=TODAY)
    assert (weekly.start, weekly.end) == (datetime.date(2026, 11, 2),
                                          datetime.date(2026, 11, 22))
    assert [b.label for b in weekly.buckets()] == ["2026-W45", "2026-W46", "2026-W47"]
    monthly = parse_query({"period": "monthly", "from": "2024-01-31", "to": "2024-03-01"},
                          today=TODAY)
    assert (monthly.start, monthly.end) == (datetime.date(2024, 1, 1),
                                            datetime.date(2024, 3, 31))
    assert [b.label for b in monthly.buckets()] == ["2024-01", "2024-02", "2024-03"]
    assert hours(monthly) == [31 * 24, 29 * 24, 31 * 24]  # a leap year
    assert len(parse_query({"period": "monthly"}, today=TODAY).buckets()) == 12
    assert len(parse_query({"period": "weekly"}, today=TODAY).buckets()) == 13


def test_the_same_report_has_the_same_key_however_it_was_asked():
    a = parse_query({"period": "weekly", "from": "2026-11-04", "to": "2026-11-18",
                     "domain": "Menu.QRCards.example."}, today=TODAY)
    b = parse_query({"period": "weekly", "from": "2026-11-02", "to": "2026-11-22",
                     "domain": "menu.qrcards.example"}, today=TODAY)
    assert a == b and a.key == b.key
    assert ReportQuery.from_dict(a.to_dict()) == a
    other = parse_query({"period": "weekly", "from": "2026-11-02", "to": "2026-11-22",
                         "domain": "menu.qrcards.example", "tz": "Europe/Berlin"})
    assert other.key != a.key
    # UTC however it is spelled (qrq.schedule's rules accept any case) is one report.
    assert parse_query({"tz": "utc"}, today=TODAY).key == parse_query({}, today=TODAY).key


def test_local_days_have_23_and_25_hours_across_dst():
    spring = parse_query({"from": "2026-03-28", "to": "2026-03-30", "tz": "Europe/Berlin"})
    assert hours(spring) == [24, 23, 24]
    autumn = parse_query({"from": "2026-10-24", "to": "2026-10-26", "tz": "Europe/Berlin"})
    assert hours(autumn) == [24, 25, 24]
    # Berlin's 29 March begins at 22:00 UTC the day before (UTC+1 until 01:00 UTC).
    assert spring.buckets()[1].start_ts == int(datetime.datetime(
        2026, 3, 28, 23, tzinfo=datetime.UTC).timestamp())
    # In Santiago the clock jumps from 00:00 to 01:00: that day begins at the jump.
    gap = parse_query({"from": "2022-09-10", "to": "2022-09-12", "tz": "America/Santiago"})
    assert hours(gap) == [24, 23, 24]
    assert gap.buckets()[1].start_ts == int(datetime.datetime(
        2022, 9, 11, 4, tzinfo=datetime.UTC).timestamp())
    kathmandu = parse_query({"from": "2026-01-01", "to": "2026-01-01", "tz": "Asia/Kathmandu"})
    assert kathmandu.buckets()[0].start_ts % 3600 == 15 * 60  # UTC+05:45


@pytest.mark.parametrize("args, field", [
    ({"period": "hourly"}, "period"),
    ({"tz": "Mars/Olympus"}, "tz"),
    ({"tz": "../../etc/passwd"}, "tz"),
    ({"tz": "Europe/Berlin\x00"}, "tz"),
    ({"from": "22.11.2026"}, "from"),
    ({"to": "2026-02-30"}, "to"),
    ({"from": "1900-01-01"}, "from"),
    ({"from": "2026-11-22", "to": "2026-11-01"}, "from"),
    ({"from": "2020-01-01", "to": "2026-01-01"}, "from"),  # > MAX_BUCKETS days
    ({"template_id": "0"}, "template_id"),
    ({"template_id": "-3"}, "template_id"),
    ({"template_id": "1e3"}, "template_id"),
    ({"template_id": "\u00b2"}, "template_id"),  # a superscript digit
    ({"from": "\u0662\u0660\u0662\u0666-11-22"}, "from"),  # Arabic-Indic digits
    ({"template_id": "99999999999999999999"}, "template_id"),
    ({"domain": "exa mple.com"}, "domain"),
    ({"domain": "a..b"}, "domain"),
    ({"domain": "x" * 300}, "domain"),
    ({"colour": "red"}, "colour"),
])
def test_bad_parameters_are_422_naming_the_parameter(args, field):
    with pytest.raises(ValidationError) as info:
        parse_query(args, today=TODAY)
    assert info.value.field == field and info.value.status == 422


def test_the_largest_range_allowed():
    query = parse_query({"from": "2024-01-01", "to": str(datetime.date(2024, 1, 1)
                                                          + datetime.timedelta(MAX_BUCKETS - 1))})
    assert len(query.buckets()) == MAX_BUCKETS
    assert len(parse_query({"period": "weekly", "from": "2000-01-01",
                            "to": "2010-12-31"}).buckets()) == (4025 // 7)
