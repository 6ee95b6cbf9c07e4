"""Mail delivery as a job of its own: retried on failure, recorded, never failing its sender."""

from qrq.notify import send_mail
from qrq.queue import huey, job_task


@job_task(name="mail.send")  # type and limits: qrq/queue/catalog.py
def send_mail_task(to: list, subject: str, body: str, html: str | None = None,
                   task=None) -> dict:
    """Send one message (SMTP, or an .eml in <data>/outbox/ when no host is set)."""
    return {"to": to, "delivered": send_mail(huey.settings, to, subject, body, html)}
