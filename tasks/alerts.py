"""The alert check, every minute in the consumer (the web app checks too: qrq/alerts.py).

This is a plain huey periodic task, not a ``periodic_job``: a job record per
minute would bury the job list under 1,440 checks a day, and the check must not
wait behind the very backlog it reports. So it has the highest priority, no job
type (no per-type cap holds it back behind a long backup), and expires after
50 s, so checks that could not start in time are dropped instead of piling up.
The ``alert`` table's ``checked_at`` shows when it last ran (on the dashboard).
"""

from huey import crontab

from qrq import alerts
from qrq.appdb.db import app_db, init_db
from qrq.notify import send_mail
from qrq.queue import huey

PRIORITY = 100


def _deliver(to: list, subject: str, body: str) -> None:
    send_mail(huey.settings, to, subject, body)


def check_alerts(task=None) -> dict:
    """Evaluate the alerts, log the new ones, mail the admins (rate-limited)."""
    settings = huey.settings
    if app_db.database != str(settings.app_db):
        init_db(settings.app_db, settings.busy_timeout)
    return alerts.check(huey.storage, settings, _deliver, periodic=True)


check_alerts.__module__ = "qrq"
check_alerts_task = huey.periodic_task(crontab(), name="alerts.check", context=True,
                                       priority=PRIORITY, expires=50, timeout=60)(check_alerts)
