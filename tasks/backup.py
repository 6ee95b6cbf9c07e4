"""Backup jobs: on demand, on the schedule, and caught up at consumer start-up.

Every run takes the ``backup`` lock first (one at a time across all consumers and
the CLI). A scheduled or catch-up run whose due time a successful run already
covered does nothing, so the periodic run and a catch-up of the same due time
never both back up.
"""

import logging
import time

from qrq import notify
from qrq.backup import apply_retention, run_backup
from qrq.errors import QrqError
from qrq.queue import huey, job_task, locks, maintenance, periodic_job, progress, submit
from qrq.queue.jobs import JobCanceled
from tasks.mail import send_mail_task

logger = logging.getLogger("qrq.backup")
settings = huey.settings
LOCK = "backup"


def _due(now: float | None = None) -> float | None:
    s = huey.settings
    return maintenance.last_due(s.backup_schedule, maintenance.zone(s.backup_timezone),
                                time.time() if now is None else now)


def backup_now(task, kind: str, due_at: float | None = None) -> dict:
    """Run one backup as job *task*: lock, back up, apply retention, mail the admins."""
    s = huey.settings

    def body() -> tuple[dict, bool]:
        try:
            manifest = run_backup(s, kind, stop=lambda: task.is_timed_out,
                                  report=lambda pct, stage: progress(task, pct, stage))
        except JobCanceled:
            raise
        except Exception as exc:
            describe = str(exc) if isinstance(exc, QrqError) else repr(exc)
            mail_admins(f"qrq backup FAILED: {describe[:120]}",
                        f"The {kind} backup job {task.id} failed before it finished:\n\n"
                        f"{describe}\n\nNo new backup set was kept.\n")
            raise
        result = summarize(manifest)
        result["removed_sets"] = apply_retention(s, maintenance.zone(s.backup_timezone))
        result["mailed"] = mail_report(manifest)
        return result, bool(manifest["ok"])

    return locks.run_exclusive(huey.storage, LOCK, task.id, kind, due_at, body)


def summarize(manifest: dict) -> dict:
    """The job result: the set's totals and, per database, ok/failed, size, duration."""
    keys = ("id", "kind", "status", "ok", "failed", "size", "compressed_size", "duration")
    result = {("set_id" if k == "id" else k): manifest[k] for k in keys}
    result["databases"] = [
        {"name": e["name"], "status": e["status"], "size": e.get("size"),
         "compressed_size": e.get("compressed_size"), "duration": e["duration"],
         **({"error": e["error"]} if e["error"] else {}),
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


def mail_admins(subject: str, body: str) -> int:
    """Queue a mail to every admin with an address; return how many."""
    try:
        to = notify.admin_addresses(huey.settings)
    except Exception:  # the report is in the job result even when app.db is unreadable
        logger.exception("could not read the admins' addresses")
        return 0
    if to:
        submit(send_mail_task, to, subject, body, owner_id=None,
               params={"to": to, "subject": subject})
    return len(to)


def mail_report(manifest: dict) -> int:
    return mail_admins(*report_text(manifest))


@job_task("maintenance", name="backup.run", timeout=settings.backup_timeout, retries=1,
          retry_delay=60)
def run_backup_task(kind: str = "manual", due_at: float | None = None, task=None) -> dict:
    """Back up every database now (``qrq backup run``), or catch up a missed run."""
    return backup_now(task, kind, due_at)


@periodic_job("maintenance", name="backup.scheduled", timeout=settings.backup_timeout,
              schedule=lambda ts: maintenance.due_now(
                  huey.settings.backup_schedule,
                  maintenance.zone(huey.settings.backup_timezone), ts))
def scheduled_backup(task=None) -> dict:
    """The backup at QRQ_BACKUP_SCHEDULE."""
    return backup_now(task, "scheduled", _due())


def catch_up(now: float | None = None) -> str | None:
    """Enqueue one catch-up backup if a scheduled one was missed; return its job id.

    Runs in every worker of every consumer at start-up; the claim in the queue
    database lets exactly one of them enqueue.
    """
    due = _due(now)
    if not locks.claim_catch_up(huey.storage, LOCK, due, now=now):
        return None
    job_id = submit(run_backup_task, "catch-up", due, owner_id=None,
                    params={"kind": "catch-up", "due_at": due})
    logger.info("backup due at %s was missed; queued catch-up job %s",
                time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(due)), job_id)
    return job_id


@huey.on_startup("backup.catch_up")
def _catch_up_on_start() -> None:
    catch_up()  # huey logs an error and goes on
