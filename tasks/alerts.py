"""The alert check, every minute in the consumer (the web app checks too: qrq/alerts.py).

It has no job type, so it leaves no job record: a record per minute would bury
the job list under 1,440 checks a day, and the check must not wait behind the
very backlog it reports. So it has the highest priority, no per-type cap holds
it back behind a long backup, and it expires after 50 s, so checks that could
not start in time are dropped instead of piling up (qrq/queue/catalog.py).
The ``alert`` table's ``checked_at`` shows when it last ran (on the dashboard).
"""

from qrq import alerts
from qrq.appdb.db import bind
from qrq.notify import send_mail
from qrq.queue import catalog, huey, periodic_job

PRIORITY = catalog.PERIODIC["alerts.check"].priority


def _deliver(to: list, subject: str, body: str) -> None:
    send_mail(huey.settings, to, subject, body)


def check_alerts(task=None) -> dict:
    """Evaluate the alerts, log the new ones, mail the admins (rate-limited)."""
    settings = huey.settings
    bind(settings)
    return alerts.check(huey.storage, settings, _deliver, periodic=True)


check_alerts_task = periodic_job(name="alerts.check")(check_alerts)
