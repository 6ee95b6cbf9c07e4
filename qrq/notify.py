"""E-mail: over SMTP when a host is configured, else as .eml files in ``<data>/outbox/``.

Local installs have no mail server; writing each message to the outbox keeps it
readable (any mail client opens an .eml) and testable without one.
"""

from __future__ import annotations

import os
import smtplib
import ssl
import time
import uuid
from email.message import EmailMessage
from pathlib import Path

from qrq.appdb.db import app_db, bind
from qrq.appdb.models import User
from qrq.config import Settings
from qrq.errors import TransientError


def admin_addresses(settings: Settings) -> list[str]:
    """The e-mail addresses of the admins who have one, oldest admin first, each once.

    Binds the app database to *settings* when it is not yet (a consumer), and
    leaves a connection the caller holds open (a web request).
    """
    bind(settings)
    opened = app_db.is_closed()
    if opened:
        app_db.connect()
    try:
        emails = [u.email for u in User.select(User.email).where(
            User.is_admin == True, User.email.is_null(False)).order_by(User.id)]  # noqa: E712
    finally:
        if opened:
            app_db.close()
    return list(dict.fromkeys(email for email in emails if email))


def build_message(settings: Settings, to: list[str], subject: str, body: str,
                  html: str | None = None) -> EmailMessage:
    message = EmailMessage()
    message["From"] = settings.mail_from
    message["To"] = ", ".join(to)
    message["Subject"] = subject
    message["Message-ID"] = f"<{uuid.uuid4().hex}@qrq>"
    message["Date"] = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime())
    message.set_content(body)
    if html is not None:
        message.add_alternative(html, subtype="html")
    return message


def send_mail(settings: Settings, to: list[str], subject: str, body: str,
              html: str | None = None) -> str:
    """Send one message; return ``"smtp"`` or the path of the .eml written.

    :raises TransientError: the SMTP server could not be reached or refused the
        message for now (worth retrying).
    """
    if not to:
        raise ValueError("no recipients")
    message = build_message(settings, to, subject, body, html)
    if not settings.smtp_host:
        return str(write_eml(settings.outbox_dir, message))
    try:
        _deliver(settings, message)
    except (OSError, smtplib.SMTPException) as exc:
        raise TransientError(f"mail to {', '.join(to)} not sent: {exc}") from exc
    return "smtp"


def write_eml(outbox: Path, message: EmailMessage) -> Path:
    """Write *message* atomically as ``<outbox>/<time>-<id>.eml``."""
    outbox.mkdir(parents=True, exist_ok=True)
    name = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:8]}.eml"
    tmp = outbox / f".{name}.tmp"
    tmp.write_bytes(bytes(message))
    os.replace(tmp, outbox / name)
    return outbox / name


def _deliver(settings: Settings, message: EmailMessage) -> None:
    timeout = 30
    if settings.smtp_security == "ssl":
        smtp = smtplib.SMTP_SSL(settings.smtp_host, settings.smtp_port, timeout=timeout,
                                context=ssl.create_default_context())
    else:
        smtp = smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=timeout)
    with smtp:
        if settings.smtp_security == "starttls":
            smtp.starttls(context=ssl.create_default_context())
        if settings.smtp_user:
            smtp.login(settings.smtp_user, settings.smtp_password)
        smtp.send_message(message)
