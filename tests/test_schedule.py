"""qrq.schedule: one time-zone rule set and one cron search, in both directions."""

import datetime
import random
import zoneinfo

import pytest
from huey import crontab

from qrq.analytics.query import zone as analytics_zone
from qrq.errors import ValidationError
from qrq.humanize import format_bytes
from qrq.queue import maintenance
from qrq.schedule import Cron, last_due, next_due, next_match, zone

BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")


def ts(*args, tz=datetime.UTC):
    return datetime.datetime(*args, tzinfo=tz).timestamp()


@pytest.mark.parametrize("expr", ["0 2 * * *", "*/15 3-5 * * 1-5", "0 12 * * 6-1",
                                  "1-50/7 */6 1,15 */2 7", "5 4 29 2 *"])
def test_cron_matches_what_hueys_crontab_matches(expr):
    ours, hueys = Cron(expr), crontab(*expr.split(), strict=True)
    rnd = random.Random(expr)
    for _ in range(2000):
        moment = datetime.datetime(2026, 1, 1) + datetime.timedelta(
            minutes=rnd.randrange(1440 * 800))
        assert ours.matches(moment) == hueys(moment), moment


def test_a_yearly_schedule_is_found_in_both_directions():
    now = ts(2026, 11, 22, 10, 0)
    assert last_due("0 0 1 1 *", BERLIN, now) == ts(2026, 1, 1, tz=BERLIN)
    # The catch-up of missed runs reaches it too (it gave up after 35 days).
    assert maintenance.last_due("0 0 1 1 *", BERLIN, now) == ts(2026, 1, 1, tz=BERLIN)
    assert next_due("0 0 1 1 *", BERLIN, now) == ts(2027, 1, 1, tz=BERLIN)
    assert last_due("5 4 29 2 *", datetime.UTC, now) == ts(2024, 2, 29, 4, 5)
    assert next_due("0 0 30 2 *", datetime.UTC, now) is None  # no such day, ever


def test_daylight_saving_changes_forwards():
    # 29 March 2026: 02:30 does not happen in Berlin; 25 October: it happens twice.
    assert next_due("30 2 * * *", BERLIN, ts(2026, 3, 28, 12, 0)) == ts(2026, 3, 30, 0, 30)
    assert next_due("30 2 * * *", BERLIN, ts(2026, 10, 24, 12, 0)) == ts(2026, 10, 25, 0, 30)
    assert next_due("30 2 * * *", BERLIN, ts(2026, 10, 25, 0, 30)) == ts(2026, 10, 25, 1, 30)


def test_the_dashboard_search_has_no_horizon_for_a_cron():
    after = datetime.datetime(2026, 11, 22, 10, 7, 30)
    assert next_match(Cron("0 0 1 1 *"), after, days=8) == datetime.datetime(2027, 1, 1)
    assert next_match(crontab(minute="7"), after, days=8) == datetime.datetime(
        2026, 11, 22, 11, 7)


def test_one_rule_set_for_time_zone_names():
    assert zone("utc") is datetime.UTC and zone("") is datetime.UTC
    assert zone(" Europe/Berlin ") == BERLIN
    for bad in ("Mars/Base", "/etc/localtime", "../../etc/passwd", "x" * 65):
        with pytest.raises(ValueError, match="time zone"):
            zone(bad)
        with pytest.raises(ValidationError) as caught:
            analytics_zone(bad)
        assert caught.value.field == "tz"


def test_byte_sizes_use_binary_units_and_say_so():
    assert format_bytes(512) == "512 B"
    assert format_bytes(1536) == "1.5 KiB"
    assert format_bytes(5 * 1024**3) == "5.0 GiB"
    assert format_bytes(3 * 1024**5) == "3,072.0 TiB"


def test_a_cron_takes_ascii_digits_only():
    for expr in ("\u0663 * * * *", "\u0661-\u0663 * * * *", "*/\u0663 * * * *"):
        with pytest.raises(ValueError, match="minute"):
            Cron(expr)  # Arabic-Indic digits
