"""Retention decisions: a pure function of the sets' dates and outcomes."""

import datetime
import zoneinfo

from qrq.backup import plan_retention

START = datetime.datetime(2026, 1, 1, 2, 0, tzinfo=datetime.UTC)


def manifest(when, status="ok", set_id=None, kind="scheduled"):
    ok = 0 if status == "failed" else 3
    return {"id": set_id or when.strftime("%Y%m%dT%H%M%SZ"), "status": status, "ok": ok,
            "kind": kind, "created_at": when.isoformat().replace("+00:00", "Z")}


def daily_sets(days, start=START):
    return [manifest(start + datetime.timedelta(days=d)) for d in range(days)]


def ids(*dates):
    return [d.strftime("%Y%m%dT%H%M%SZ") for d in dates]


def day(month, dom, hour=2):
    return datetime.datetime(2026, month, dom, hour, 0, tzinfo=datetime.UTC)


def test_keeps_the_last_days_weeks_and_months():
    sets = daily_sets(120)  # 2026-01-01 .. 2026-04-30, one a day at 02:00 UTC
    keep, delete = plan_retention(sets, daily=7, weekly=4, monthly=3)
    expected = ids(
        *(day(4, d) for d in range(30, 23, -1)),  # the last 7 days
        # weekly: the newest of each of the last 4 ISO weeks: 04-30 and 04-26 (both daily),
        # then the Sundays 04-19 and 04-12
        day(4, 19), day(4, 12),
        day(3, 31), day(2, 28),  # monthly: newest of April (daily), March, February
    )
    assert keep == sorted(set(expected), reverse=True)
    assert len(delete) == 120 - len(keep)
    assert sorted(keep + delete) == sorted(s["id"] for s in sets)


def test_the_newest_of_several_sets_a_day_is_the_daily_one():
    sets = [manifest(day(3, 10, h)) for h in (1, 9, 17)] + [manifest(day(3, 9, 5))]
    keep, delete = plan_retention(sets, daily=2, weekly=0, monthly=0)
    assert keep == ids(day(3, 10, 17), day(3, 9, 5))
    assert delete == ids(day(3, 10, 9), day(3, 10, 1))


def test_days_are_counted_in_the_configured_time_zone():
    # 23:30 UTC on 3 March is already 4 March in Berlin (UTC+1): same local day as 4 March 10:00.
    sets = [manifest(day(3, 4, 10)), manifest(day(3, 3, 23).replace(minute=30)),
            manifest(day(3, 3, 12))]
    utc_keep, _ = plan_retention(sets, daily=2, weekly=0, monthly=0)
    berlin_keep, _ = plan_retention(sets, daily=2, weekly=0, monthly=0,
                                    tz=zoneinfo.ZoneInfo("Europe/Berlin"))
    assert utc_keep == ids(day(3, 4, 10), day(3, 3, 23).replace(minute=30))
    assert berlin_keep == ids(day(3, 4, 10), day(3, 3, 12))


def test_the_last_fully_good_set_is_never_removed():
    good = manifest(day(1, 5))
    partial = [manifest(day(2, d), status="partial") for d in range(1, 20)]
    keep, delete = plan_retention([good, *partial], daily=3, weekly=0, monthly=0)
    assert good["id"] in keep and good["id"] not in delete
    assert keep == ids(day(2, 19), day(2, 18), day(2, 17), day(1, 5))
    keep, _ = plan_retention([good, *partial], daily=0, weekly=0, monthly=0)
    assert keep == ids(day(2, 19), day(1, 5))  # and the newest usable one


def test_failed_sets_stay_visible_within_the_daily_window_only():
    sets = [*daily_sets(10), manifest(day(1, 10, 23), status="failed"),
            manifest(day(1, 2, 23), status="failed")]
    keep, delete = plan_retention(sets, daily=3, weekly=0, monthly=0)
    assert ids(day(1, 10, 23))[0] in keep
    assert ids(day(1, 2, 23))[0] in delete
    only_failed = [manifest(day(1, d), status="failed") for d in range(1, 6)]
    keep, delete = plan_retention(only_failed, daily=2, weekly=4, monthly=12)
    assert keep == ids(day(1, 5), day(1, 4)) and len(delete) == 3


def test_nothing_to_keep_or_delete():
    assert plan_retention([], daily=7, weekly=4, monthly=12) == ([], [])


def test_a_safety_set_outlives_a_later_set_of_its_day_within_the_daily_window():
    # 3 March: a safety backup at 10:00 before a restore, then a manual one at 18:00,
    # which is that day's daily set; 20 February: a safety set older than the window.
    sets = [manifest(day(3, d)) for d in range(1, 6)] + [
        manifest(day(3, 3, 10), kind="safety"), manifest(day(3, 3, 18), kind="manual"),
        manifest(day(2, 20, 10), kind="safety")]
    keep, delete = plan_retention(sets, daily=4, weekly=0, monthly=0)
    assert keep == ids(day(3, 5), day(3, 4), day(3, 3, 18), day(3, 3, 10), day(3, 2))
    assert delete == ids(day(3, 3), day(3, 1), day(2, 20, 10))


def test_a_safety_set_stays_when_every_set_is_from_its_own_day():
    # A new backup directory: a set, the safety set a restore took, then the next
    # backup, all on one day. The day's set is the newest; the safety set stays too.
    sets = [manifest(day(3, 3, 9), kind="manual"), manifest(day(3, 3, 10), kind="safety"),
            manifest(day(3, 3, 11), kind="manual")]
    keep, delete = plan_retention(sets, daily=7, weekly=4, monthly=12)
    assert keep == ids(day(3, 3, 11), day(3, 3, 10))
    assert delete == ids(day(3, 3, 9))


def test_the_set_a_restore_came_from_stays_with_its_safety_set():
    # 09:00 a backup; at 10:00 it is restored (the safety set names it); the restored
    # queue runs the backup that made it again, at 11:00: the day's newest. The set
    # restored from stays, to be restored again if need be.
    restored = manifest(day(3, 3, 9), kind="manual")
    safety = {**manifest(day(3, 3, 10), kind="safety"), "restoring": restored["id"]}
    sets = [restored, safety, manifest(day(3, 3, 11), kind="manual")]
    keep, delete = plan_retention(sets, daily=7, weekly=4, monthly=12)
    assert keep == ids(day(3, 3, 11), day(3, 3, 10), day(3, 3, 9)) and delete == []


def test_the_last_set_of_the_sqlite_files_outlives_a_move_to_postgresql():
    # Moved the same day: the dump's set is that day's, yet the SQLite set made before
    # the move is the way back, and stays, until another set of SQLite files is newer.
    sqlite_set = {**manifest(day(3, 10, 1)), "databases": [{"codec": "zstd"}]}
    dumps = [{**manifest(day(3, d, 9)), "databases": [{"codec": "pg_dump"}]}
             for d in (10, 11, 12)]
    keep, delete = plan_retention([sqlite_set, *dumps], daily=2, weekly=0, monthly=0)
    assert keep == ids(day(3, 12, 9), day(3, 11, 9), day(3, 10, 1))
    assert delete == ids(day(3, 10, 9))
