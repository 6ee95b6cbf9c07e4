"""What a POST that creates a job must pass: the caller's active-job quota and its
``Idempotency-Key`` (checked again inside the enqueue: :mod:`qrq.queue.admission`)."""

from __future__ import annotations

from typing import Any

from flask import Response, current_app, request

from qrq.queue import Admission, huey
from qrq.queue import admission as checks
from qrq.web.auth import current_user


def job_quota() -> int | None:
    """The caller's limit of unfinished jobs (``QRQ_MAX_ACTIVE_JOBS``); None: no limit."""
    limit = current_app.config["QRQ"].max_active_jobs
    return None if not limit or current_user().is_admin else limit


def analytics_quota() -> tuple[str, int] | None:
    """The caller's limit of unfinished analytics jobs (``QRQ_MAX_ACTIVE_ANALYTICS``)."""
    limit = current_app.config["QRQ"].max_active_analytics
    return None if not limit or current_user().is_admin else ("analytics", limit)


def check_job_quota(type_limit: tuple[str, int] | None = None) -> None:
    """Refuse a new job (429) while the caller has ``QRQ_MAX_ACTIVE_JOBS`` unfinished, or
    as many of a type as *type_limit* allows."""
    checks.check_quota(huey.storage, current_user().id, job_quota(), type_limit)


def job_admission(body: Any) -> Admission:
    """The checks this request's job passes when it is enqueued.

    :raises ValidationError: a malformed ``Idempotency-Key`` header.
    """
    key = checks.check_key(request.headers.get(checks.HEADER))
    return Admission(max_active=job_quota(), idempotency_key=key,
                     fingerprint=checks.fingerprint(body) if key is not None else None)


def replayed_job(admission: Admission) -> str | None:
    """The job an earlier request with this Idempotency-Key made (before any new work).

    :raises ValidationError: the key was used with another request body (422).
    """
    if admission.idempotency_key is None:
        return None
    return checks.lookup(huey.storage, current_user().id, admission.idempotency_key,
                         admission.fingerprint)


def mark_replayed(response: Response, replayed: bool) -> Response:
    """Say that the answer is the earlier request's job, as Stripe's API does."""
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response
