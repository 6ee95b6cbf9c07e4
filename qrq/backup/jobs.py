"""Backups as jobs: on demand, on the schedule, and caught up at consumer start-up.

Every run takes the ``backup`` lock first (one at a time across all consumers and
the CLI). A scheduled or catch-up run whose due time a successful run already
covered does nothing, so the periodic run and a catch-up of the same due time
never both back up. The task module (``tasks/backup.py``) passes in how to report
progress, when to stop and how to queue a mail, so this module knows no task.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable

from qrq import notify, schedule
from qrq.backup.retention import apply_retention
from qrq.backup.runs import run_backup
from qrq.errors import QrqError
from qrq.queue import jobs, locks
from qrq.queue.jobs import JobCanceled

logger = logging.getLogger("qrq.backup")
LOCK = "backup"

Mailer = Callable[[list[str], str, str], None]


def last_due(settings, now: float | None = None) -> float | None:
    """When the backup schedule was last due (None: no schedule)."""
    return schedule.last_due(settings.backup_schedule, schedule.zone(settings.backup_timezone),
                             time.time() if now is None else now)


def scheduled_run(settings, storage, job_id: str) -> tuple[str, float | None]:
    """The kind and due time of a run of the scheduled backup: ``scheduled`` at its
    last due time, or ``manual`` when someone ran it now by hand (``qrq schedule run``,
    the dashboard: its record names who asked), which is not skipped because this due
    time's backup already ran."""
    record = jobs.get(storage, job_id)
    if record is not None and "requested_by" in json.loads(record["params"]):
        return "manual", None
    return "scheduled", last_due(settings)


def backup_now(settings, storage, job_id: str, kind: str, due_at: float | None = None, *,
               report: Callable[[float, str], None], stop: Callable[[], bool],
               mail: Mailer, retried: Callable[[Exception], bool] = lambda exc: False
               ) -> dict:
    """Run one backup as job *job_id*: lock (in *storage*, the queue's), back up, apply
    retention, mail the admins.

    A run that fails before its set is written mails the admins too, then raises;
    unless *retried* says the job's retry follows (then only the last attempt's
    failure is mailed, and recorded for the ``backup_failed`` alert).
    """
    def body() -> tuple[dict, str]:
        try:
            manifest = run_backup(settings, kind, stop=stop, report=report)
        except JobCanceled:
            raise
        except Exception as exc:
            describe = str(exc) if isinstance(exc, QrqError) else repr(exc)
            if retried(exc):
                logger.warning("the %s backup job %s failed (%s); it will be retried",
                               kind, job_id, describe[:200])
                raise
            mail_admins(settings, mail, f"qrq backup FAILED: {describe[:120]}",
                        f"The {kind} backup job {job_id} failed before it finished:\n\n"
                        f"{describe}\n\nNo new backup set was kept.\n")
            raise
        result = summarize(manifest)
        result["removed_sets"] = apply_retention(
            settings, schedule.zone(settings.backup_timezone))
        result["mailed"] = mail_admins(settings, mail, *report_text(manifest))
        return result, manifest["status"]  # ok, partial or failed (locks.OUTCOMES)

    return locks.run_exclusive(storage, LOCK, job_id, kind, due_at, body, retried)


def claim_catch_up(settings, storage, now: float | None = None) -> float | None:
    """The due time of a missed scheduled backup this caller should catch up, or None.

    Every worker of every consumer asks at start-up; the claim in the queue
    database lets exactly one of them have it.
    """
    due = last_due(settings, now)
    if not locks.claim_catch_up(storage, LOCK, due, now=now):
        return None
    logger.info("backup due at %s was missed; queueing a catch-up",
                time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(due)))
    return due


def summarize(manifest: dict) -> dict:
    """The job result: the set's totals and, per database, ok/failed, size, duration."""
    keys = ("id", "kind", "status", "ok", "failed", "size", "compressed_size", "duration")
    result = {("set_id" if k == "id" else k): manifest[k] for k in keys}
    result["databases"] = [
        {"name": e["name"], "status": e["status"], "size": e.get("size"),
         "compressed_size": e.get("compressed_size"), "duration": e["duration"],
         **({"error": e["error"]} if e["error"] else {}),
         **({"reused_from": e["reused_from"]} if e.get("reused_from") else {}),
         **({"note": e["note"]} if e.get("note") else {})}
        for e in manifest["databases"]]
    return result


def report_text(manifest: dict) -> tuple[str, str]:
    """Subject and body of the backup report mail."""
    failed = [e for e in manifest["databases"] if e["status"] != "ok"]
    subject = (f"qrq backup {manifest['id']}: {manifest['status']}, "
               f"{manifest['ok']}/{manifest['ok'] + manifest['failed']} databases ok")
    lines = [subject, "", f"kind: {manifest['kind']}  codec: {manifest['codec']}  "
             f"duration: {manifest['duration']:.1f}s",
             f"size: {manifest['size']:,} bytes, compressed {manifest['compressed_size']:,}", ""]
    if failed:
        lines += ["FAILED:"] + [f"  {e['name']}: {e['error']}" for e in failed] + [""]
    lines.append(f"{'database':<40} {'status':<7} {'size':>14} {'seconds':>8}")
    for e in manifest["databases"]:
        lines.append(f"{e['name']:<40} {e['status']:<7} {e.get('size') or 0:>14,} "
                     f"{e['duration']:>8.2f}  {e.get('note') or ''}".rstrip())
    return subject, "\n".join(lines) + "\n"


def mail_admins(settings, mail: Mailer, subject: str, body: str) -> int:
    """Queue a mail to every admin with an address (with *mail*); return how many."""
    try:
        to = notify.admin_addresses(settings)
    except Exception:  # the report is in the job result even when app.db is unreadable
        logger.exception("could not read the admins' addresses")
        return 0
    if to:
        mail(to, subject, body)
    return len(to)
