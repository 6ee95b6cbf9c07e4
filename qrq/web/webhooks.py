"""Webhook settings over the API: ``GET``/``PUT /api/me/webhook``, and the
``callback_url`` of job submissions (see :mod:`qrq.webhooks`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Blueprint, current_app, jsonify

from qrq import webhooks  # its import registers the end hook: a cancel here posts too
from qrq.queue import audit, huey
from qrq.web.auth import current_user, login_required
from qrq.web.params import json_object

bp = Blueprint("webhooks", __name__, url_prefix="/api/me")

UNSET = object()


def callback_url(given: Any = UNSET) -> str | None:
    """The callback URL of a new job of the caller: *given* (checked; None: no webhook),
    else the caller's default. :raises ValidationError: on ``callback_url``."""
    if given is UNSET:
        return webhooks.default_url(huey.storage, current_user().id)
    if given is None:
        return None
    webhooks.check_url(given, current_app.config["QRQ"].webhook_allow_private)
    return given


def submit_with_callback(job_id: str, url: str | None, enqueue: Callable[[], str]) -> str:
    """Record *job_id*'s callback (if any), then *enqueue*; return the id it returns.

    A failed enqueue drops the callback, and so does one that answers with an earlier
    job (a repeated Idempotency-Key): that job keeps its own callback, and no second
    webhook is ever queued for one request.
    """
    if url is None:
        return enqueue()
    webhooks.set_target(huey.storage, job_id, current_user().id, url)
    try:
        queued = enqueue()
    except BaseException:
        webhooks.drop_target(huey.storage, job_id)
        raise
    if queued != job_id:
        webhooks.drop_target(huey.storage, job_id)
    return queued


def _settings_view() -> dict[str, Any]:
    user = current_user()
    return {"callback_url": webhooks.default_url(huey.storage, user.id),
            "secret": webhooks.user_secret(huey.storage, current_app.config["QRQ"], user.id),
            "signature": "X-Qrq-Signature: v1=hex(HMAC-SHA256(secret, "
                         "X-Qrq-Timestamp + '.' + body))"}


@bp.get("/webhook")
@login_required
def show():
    """Your default callback URL and the secret your webhooks are signed with."""
    return jsonify(_settings_view())


@bp.put("/webhook")
@login_required
def update():
    """Set your default callback URL (``null``: none), used by jobs that give none."""
    body = json_object({"callback_url"}, {"callback_url"})
    url = body["callback_url"]
    if url is not None:
        webhooks.check_url(url, current_app.config["QRQ"].webhook_allow_private)
    webhooks.set_default_url(huey.storage, current_user().id, url)
    return jsonify(_settings_view())


@bp.post("/webhook/secret")
@login_required
def replace_secret():
    """Replace your webhook secret (one that leaked): every delivery from now on, those
    already queued too, is signed with the new one, which this returns."""
    user = current_user()
    webhooks.replace_secret(huey.storage, user.id)
    audit.record(huey.storage, user.name, "webhook.replace_secret")
    return jsonify(_settings_view())
