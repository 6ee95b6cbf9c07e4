"""Which backup sets to keep: the newest of each of the last days, weeks and months."""

from __future__ import annotations

import datetime
import shutil
from collections.abc import Iterable

from qrq.backup.postgres import CODEC as PG_CODEC
from qrq.backup.sets import usable_sets


def plan_retention(sets: Iterable[dict], daily: int, weekly: int, monthly: int,
                   tz: datetime.tzinfo = datetime.UTC) -> tuple[list[str], list[str]]:
    """Which sets to keep and which to delete; a pure function of the manifests.

    Among sets with a good database, the newest of each of the last *daily* days,
    *weekly* ISO weeks and *monthly* months (in *tz*) are kept. The newest fully
    good set is always kept, and so is the newest set of SQLite files once the sets are
    PostgreSQL dumps (a move's way back), and so are the ``safety`` sets (taken before a restore
    over the live data) within the daily window, with the sets they were taken to
    restore from. Sets with no good database are
    kept only while they are younger than the oldest daily set kept, so a failure
    stays visible.
    Returns ``(keep, delete)`` as id lists, newest first.
    """
    def when(m: dict) -> datetime.datetime:
        moment = datetime.datetime.fromisoformat(m["created_at"].replace("Z", "+00:00"))
        return moment.astimezone(tz)

    ordered = sorted(sets, key=lambda m: (m["created_at"], m["id"]), reverse=True)
    usable = [m for m in ordered if m["ok"]]
    keep: set[str] = set()
    buckets = ((daily, lambda d: d.date()), (weekly, lambda d: d.isocalendar()[:2]),
               (monthly, lambda d: (d.year, d.month)))
    kept_daily: list[datetime.datetime] = []
    for rule, (count, bucket) in enumerate(buckets):
        seen: set = set()
        for manifest in usable:
            key = bucket(when(manifest))
            if key in seen:
                continue
            if len(seen) >= count:
                break
            seen.add(key)
            keep.add(manifest["id"])
            if rule == 0:
                kept_daily.append(when(manifest))
    # The newest fully good set, and the newest set with any good database, always stay;
    # so does the newest of the SQLite files after a move to PostgreSQL (the way back):
    # a dump's set of the same day would otherwise be that day's, and it would go.
    for group in ([m for m in ordered if m["status"] == "ok"], usable,
                  [m for m in usable if not _holds_dump(m)]):
        if group:
            keep.add(group[0]["id"])
    failed = [m for m in ordered if not m["ok"]]
    if kept_daily:
        keep.update(m["id"] for m in failed if when(m) >= kept_daily[-1])
        # A safety set holds what a restore over the live data replaced: it stays for
        # the daily window, the days kept (by date: a later set of its own day, such as
        # the next backup after the restore, is that day's set, not a reason to go).
        safety = [m for m in usable
                  if m.get("kind") == "safety" and when(m).date() >= kept_daily[-1].date()]
        keep.update(m["id"] for m in safety)
        # So does the set it was taken to restore from: the restored queue may run the
        # backup that made it again, whose set would otherwise replace it as its day's.
        keep.update(m["restoring"] for m in safety if m.get("restoring"))
    elif usable:
        keep.update(m["id"] for m in failed if when(m) >= when(usable[0]))
    else:
        keep.update(m["id"] for m in failed[:max(daily, 1)])
    return ([m["id"] for m in ordered if m["id"] in keep],
            [m["id"] for m in ordered if m["id"] not in keep])


def _holds_dump(manifest: dict) -> bool:
    """Whether the set is of a PostgreSQL installation (its queue is a dump)."""
    return any(e.get("codec") == PG_CODEC for e in manifest.get("databases", ()))


def apply_retention(settings, tz: datetime.tzinfo = datetime.UTC) -> list[str]:
    """Delete the sets :func:`plan_retention` does not keep; return their ids.

    Damaged sets are left alone: retention cannot tell what they hold, and they stay
    listed until an operator looks at them.
    """
    backups = settings.backups_dir
    _, delete = plan_retention(usable_sets(backups), settings.backup_keep_daily,
                               settings.backup_keep_weekly, settings.backup_keep_monthly, tz)
    for set_id in delete:
        shutil.rmtree(backups / set_id, ignore_errors=True)
    return delete
