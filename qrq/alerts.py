"""Alerts: a queue backlog, a job waiting too long, no consumer alive, paused job types,
a failed backup or none for too long.

:func:`evaluate` reads the queue database and says which alerts fire now. The
``alert`` table (qrq/schema.py) remembers, per kind, since when it fires and when
it was last mailed, so the periodic check in the consumer and every web process
that looks (the dashboard, ``/metrics``) agree, log a warning once when an alert
starts, and send at most one mail per kind per ``alert_mail_interval``.

The "no consumer" alert cannot rely on the periodic task (that needs a running
consumer), which is why the web app evaluates alerts too.

Jobs of a paused type (:mod:`qrq.queue.pauses`) wait on purpose: they count towards
neither the backlog nor the queue age. The "paused" notice says which types are
paused and how many jobs each holds back instead; being an operator's own doing, it is
shown and logged but never mailed.

The backup alerts read what the backup runs record in the queue database
(:func:`qrq.queue.locks.runs`: one read by primary key), not the job list, which
retention empties and where a set that did not verify is a finished job.
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Callable
from typing import Any

from qrq.backup import jobs as backup_jobs
from qrq.config import Settings
from qrq.notify import admin_addresses
from qrq.queue import locks, pauses, roles, stats

logger = logging.getLogger("qrq.alerts")

KINDS = ("backlog", "queue_age", "no_consumer", "paused", "unserved_type", "backup_failed",
         "backup_age")
# Kinds that inform rather than warn: shown and recorded, never mailed.
NOTICES = ("paused",)


def line(alert: dict) -> str:
    """``alert KIND: message``; a notice (a paused type), whose message names it, as
    ``notice: message``: how the CLI and the log say it."""
    if alert["kind"] in NOTICES:
        return f"notice: {alert['message']}"
    return f"alert {alert['kind']}: {alert['message']}"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def evaluate(storage, settings: Settings, now: float | None = None) -> list[dict[str, Any]]:
    """The alerts firing now: ``[{"kind", "message", "value", "threshold"}]``."""
    now = time.time() if now is None else now
    found = []
    held = {p["type"]: p for p in pauses.paused(storage)}
    queued = stats.queued_count(storage) - sum(p["queued"] for p in held.values())
    if queued > settings.alert_backlog:
        found.append({"kind": "backlog", "value": queued, "threshold": settings.alert_backlog,
                      "message": f"{queued} jobs queued (alert above "
                                 f"{settings.alert_backlog})"})
    ages = {t: age for t, age in stats.oldest_queued(storage, now).items() if t not in held}
    if ages:
        job_type, age = max(ages.items(), key=lambda item: item[1])
        if age > settings.alert_queue_age:
            found.append({"kind": "queue_age", "value": round(age, 1),
                          "threshold": settings.alert_queue_age,
                          "message": f"the oldest queued job ({job_type}) has waited "
                                     f"{_duration(age)} (alert above "
                                     f"{_duration(settings.alert_queue_age)})"})
    last = stats.last_heartbeat(storage)
    if last is None or now - last > settings.alert_heartbeat_age:
        seen = ("no consumer has registered" if last is None
                else f"the last consumer heartbeat was {_duration(now - last)} ago")
        found.append({"kind": "no_consumer",
                      "value": None if last is None else round(now - last, 1),
                      "threshold": settings.alert_heartbeat_age,
                      "message": f"no consumer is running: {seen}; queued jobs will not run"})
    else:
        found += _unserved_types(storage, settings, ages, now)
    if held:
        waiting = sum(p["queued"] for p in held.values())
        found.append({"kind": "paused", "value": len(held), "threshold": None,
                      "types": list(held.values()),
                      "message": "paused: " + ", ".join(
                          f"{t} ({p['queued']} queued)" for t, p in held.items())
                      + (f"; {waiting} job waits" if waiting == 1 else f"; {waiting} jobs wait")
                      + " until resumed"})
    return found + _backups(storage, settings, now)


def _unserved_types(storage, settings: Settings, ages: dict[str, float],
                    now: float) -> list[dict[str, Any]]:
    """The "unserved_type" alert: jobs of a type that no live consumer takes (every
    host's ``qrq worker --types``/``--exclude-types`` leaves it out) wait: queued, or
    left running by a consumer that stopped (only a consumer of its type takes it over)."""
    live = [c for c in stats.consumers(storage, now)
            if c["heartbeat_age"] <= settings.alert_heartbeat_age]
    waiting = {*ages, *stats.lapsed_types(storage, now)}
    unserved = sorted(t for t in waiting if t and not any(roles.takes(c, t) for c in live))
    if not unserved:
        return []
    return [{"kind": "unserved_type", "value": len(unserved), "threshold": None,
             "types": unserved,
             "message": f"jobs of type {', '.join(unserved)} wait (queued, or left running "
                        "by a consumer that stopped), but no running consumer takes that "
                        "type (see each host's qrq worker --types and --exclude-types)"}]


def _utc(moment: float) -> str:
    return datetime.datetime.fromtimestamp(moment, datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _backups(storage, settings: Settings, now: float) -> list[dict[str, Any]]:
    """The "backup_failed" alert (the latest backup run raised with no retry left, or
    left a set with a database that did not verify, until a later run succeeds) and the
    "backup_age" one (while backups are scheduled, none succeeded for
    ``alert_backup_age`` seconds, and one was due since the last success: since the
    first consumer start before any, so a new install is not alerted before its first
    backup was due)."""
    runs = locks.runs(storage, backup_jobs.LOCK)
    found = []
    succeeded, failed = runs["succeeded"], runs["failed"]
    if failed is not None and failed >= (succeeded or 0):  # a partial set records both
        found.append({"kind": "backup_failed", "value": failed, "threshold": None,
                      "message": f"the latest backup, started {_utc(failed)}, failed or "
                                 "made a set with a database that did not verify: see its "
                                 "job (qrq jobs list --type maintenance, then qrq jobs show "
                                 "ID) and qrq backup list, fix the cause, then run qrq "
                                 "backup run"})
    since = succeeded or runs["first_seen"]
    due = backup_jobs.last_due(settings, now)
    if since is not None and due is not None and due > since \
            and now - since > settings.alert_backup_age:
        seen = (f"the last one started {_utc(since)}" if succeeded
                else f"none since the first consumer start, {_utc(since)}")
        found.append({"kind": "backup_age", "value": round(now - since, 1),
                      "threshold": settings.alert_backup_age,
                      "message": f"no backup has succeeded for {_duration(now - since)} "
                                 f"(alert above {_duration(settings.alert_backup_age)}; "
                                 f"{seen}), though one was due at {_utc(due)}: see the "
                                 "backup jobs (qrq jobs list --type maintenance) and that a "
                                 "consumer runs maintenance jobs, then run qrq backup run"})
    return found


def _states(storage) -> dict[str, dict[str, Any]]:
    rows = storage.sql("select kind, active, since, checked_at, mailed_at from alert",
                       results=True)
    return {kind: {"active": bool(active), "since": since, "checked_at": checked_at,
                   "mailed_at": mailed_at} for kind, active, since, checked_at, mailed_at in rows}


def record(storage, firing: list[dict[str, Any]], now: float | None = None,
           periodic: bool = False) -> list[dict[str, Any]]:
    """Store which alerts fire; log a warning for each that just started.

    Reads first and writes only on a change (or, for the periodic check, its
    time), so web requests that look at alerts rarely take the write lock.
    Returns *firing* with each alert's ``since``.
    """
    now = time.time() if now is None else now
    states = _states(storage)
    by_kind = {alert["kind"]: alert for alert in firing}
    for kind in KINDS:
        state = states.get(kind, {"active": False, "since": None})
        alert = by_kind.get(kind)
        if alert is not None and not state["active"]:
            with storage.db(commit=True) as curs:
                curs.execute("insert into alert (kind) values (?) on conflict do nothing",
                             (kind,))
                curs.execute("update alert set active = 1, since = ?, message = ? "
                             "where kind = ? and active = 0", (now, alert["message"], kind))
                started = curs.rowcount == 1
            if started:
                logger.warning("%s", line(alert))
            state = {**state, "since": now}
        elif alert is None and state["active"]:
            with storage.db(commit=True) as curs:
                curs.execute("update alert set active = 0, since = null where kind = ? "
                             "and active = 1", (kind,))
                ended = curs.rowcount == 1
            if ended:
                logger.info("%s %s resolved", "notice" if kind in NOTICES else "alert", kind)
        if alert is not None:
            alert["since"] = state["since"]
    if periodic:
        with storage.db(commit=True) as curs:
            curs.executemany("insert into alert (kind) values (?) on conflict do nothing",
                             [(kind,) for kind in KINDS])
            curs.execute("update alert set checked_at = ?", (now,))
    return firing


def claim_mail(storage, kind: str, interval: float, now: float | None = None) -> bool:
    """Atomically take the right to mail about *kind*: True at most once per *interval*
    across every process sharing the queue database."""
    now = time.time() if now is None else now
    with storage.db(commit=True) as curs:
        curs.execute("update alert set mailed_at = ? where kind = ? and active = 1 and "
                     "(mailed_at is null or mailed_at <= ?)", (now, kind, now - interval))
        return curs.rowcount == 1


def mail_due(storage, firing: list[dict[str, Any]], interval: float,
             now: float | None = None) -> bool:
    """Whether some firing alert may be mailed now (a read; :func:`claim_mail` decides)."""
    now = time.time() if now is None else now
    states = _states(storage)
    for alert in firing:
        if alert["kind"] in NOTICES:
            continue
        mailed_at = states.get(alert["kind"], {}).get("mailed_at")
        if mailed_at is None or mailed_at <= now - interval:
            return True
    return False


def unclaim_mail(storage, kind: str, claimed_at: float) -> None:
    """Give a claim back after the mail could not be sent, so the next check tries again."""
    storage.sql("update alert set mailed_at = null where kind = ? and mailed_at = ?",
                (kind, claimed_at), commit=True)


def last_check(storage) -> float | None:
    """When the periodic alert check last ran (None: never)."""
    return storage.sql("select max(checked_at) from alert", results=True)[0][0]


def recipients(settings: Settings) -> list[str]:
    """Admins' e-mail addresses plus ``alert_mail_to``, without duplicates."""
    extra = [a.strip() for a in settings.alert_mail_to.split(",") if a.strip()]
    return list(dict.fromkeys([*admin_addresses(settings), *extra]))


def compose(alert: dict[str, Any], firing: list[dict[str, Any]]) -> tuple[str, str]:
    """Subject and body of the mail about *alert* (listing every alert firing)."""
    subject = f"[qrq] alert: {alert['message']}"
    lines = ["qrq raised an alert:", "", f"  {alert['kind']}: {alert['message']}", ""]
    others = [a for a in firing if a["kind"] != alert["kind"]]
    if others:
        lines += ["Also firing:", *(f"  {a['kind']}: {a['message']}" for a in others), ""]
    lines += ["See the dashboard at /admin for details. At most one mail per alert kind is",
              "sent per QRQ_ALERT_MAIL_INTERVAL seconds."]
    return subject, "\n".join(lines) + "\n"


Deliver = Callable[[list[str], str, str], Any]


def mail_alerts(storage, settings: Settings, firing: list[dict[str, Any]], to: list[str],
                deliver: Deliver, now: float | None = None) -> list[str]:
    """Mail each firing alert whose kind may be mailed now; return the kinds mailed.

    *deliver(to, subject, body)* sends one message; when it raises, the claim is
    given back and the error logged, so a later check tries again.
    """
    now = time.time() if now is None else now
    mailed = []
    for alert in firing:
        if alert["kind"] in NOTICES:
            continue
        if not claim_mail(storage, alert["kind"], settings.alert_mail_interval, now):
            continue
        if not to:  # said once per interval, like the mail it replaces
            logger.warning("alert %s not mailed: no recipient; give an admin an e-mail "
                           "address or set QRQ_ALERT_MAIL_TO", alert["kind"])
            continue
        subject, body = compose(alert, firing)
        try:
            deliver(to, subject, body)
        except Exception:
            logger.exception("could not mail alert %s", alert["kind"])
            unclaim_mail(storage, alert["kind"], now)
            continue
        logger.warning("alert %s mailed to %s", alert["kind"], ", ".join(to))
        mailed.append(alert["kind"])
    return mailed


def check(storage, settings: Settings, deliver: Deliver, now: float | None = None,
          periodic: bool = False) -> dict[str, Any]:
    """Evaluate, record and mail: what the periodic task does each minute."""
    now = time.time() if now is None else now
    firing = record(storage, evaluate(storage, settings, now), now, periodic=periodic)
    mailed = mail_alerts(storage, settings, firing, recipients(settings) if firing else [],
                         deliver, now)
    return {"alerts": [a["kind"] for a in firing], "mailed": mailed}
