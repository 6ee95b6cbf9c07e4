"""Operations endpoints: ``GET /metrics`` for Prometheus and ``GET /healthz`` for load balancers.

The metrics are read from the queue database at scrape time by a custom
collector, never kept in process memory, so every gunicorn worker answers a
scrape with the same numbers. ``/metrics`` needs a bearer token: the
``QRQ_METRICS_TOKEN`` setting, or an admin's or operator's API token (a read, like the
rest of the dashboard's, :func:`~qrq.web.auth.check_role`); queue figures and
consumer host names are not for anyone who can reach the port.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeHistogramMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import choose_encoder

from qrq import alerts, health
from qrq.config import Settings
from qrq.notify import send_mail
from qrq.queue import huey, pauses, stats
from qrq.status import queue_status_document
from qrq.web.auth import bearer_token, check_role, token_user
from qrq.web.errors import error_body

logger = logging.getLogger("qrq.web")

bp = Blueprint("ops", __name__)

INF = float("inf")


# -- alerts as the web app sees them ---------------------------------------------------

def _mail_in_background(storage, settings: Settings, firing: list[dict], to: list[str],
                        now: float) -> None:
    try:
        alerts.mail_alerts(storage, settings, firing, to,
                           lambda to_, subject, body: send_mail(settings, to_, subject, body),
                           now)
    except Exception:  # a background thread has no one to raise to
        logger.exception("alert mail failed")
    finally:
        storage.close()  # this thread's own SQLite connection


def web_alerts(mail: bool = True) -> list[dict[str, Any]]:
    """The alerts firing now, recorded; mail the due ones from a background thread.

    The periodic check needs a running consumer, so the web app checks too whenever
    the dashboard, the queue status or ``/metrics`` is looked at. Sending happens off
    the request so a slow SMTP server never stalls a page; the ``alert`` table keeps
    it to one mail per kind per interval across every process.
    """
    settings = current_app.config["QRQ"]
    storage = huey.storage
    now = time.time()
    firing = alerts.record(storage, alerts.evaluate(storage, settings, now), now)
    if mail and firing and alerts.mail_due(storage, firing, settings.alert_mail_interval, now):
        # A thread only when a kind may be mailed now: once per kind and interval.
        to = alerts.recipients(settings)
        threading.Thread(target=_mail_in_background, args=(storage, settings, firing, to, now),
                         name="qrq-alert-mail", daemon=True).start()
    return firing


# -- /metrics --------------------------------------------------------------------------

class QueueCollector:
    """Prometheus collector over the queue database (no per-process state)."""

    def __init__(self, storage, settings: Settings, firing: list[dict] | None = None):
        self.storage = storage
        self.settings = settings
        self.firing = firing or []

    def collect(self):
        now = time.time()
        storage = self.storage

        jobs = GaugeMetricFamily(
            "qrq_jobs", "Retained job records per type and state; scheduled means queued "
            "with a future attempt time.", labels=["type", "state"])
        _add_per_type(jobs, stats.job_counts(storage))
        yield jobs

        oldest = GaugeMetricFamily(
            "qrq_queue_oldest_job_age_seconds", "How long the longest-waiting queued job of "
            "each type has waited (0: none waiting).", labels=["type"])
        ages = stats.oldest_queued(storage, now)
        for job_type in stats.JOB_TYPES + tuple(sorted(set(ages) - set(stats.JOB_TYPES))):
            oldest.add_metric([job_type], ages.get(job_type, 0.0))
        yield oldest

        ended = GaugeMetricFamily(
            "qrq_jobs_ended_last_hour", "Jobs that ended in the last hour, per type and "
            "status (status=failed: failures).", labels=["type", "status"])
        _add_per_type(ended, stats.ended_since(storage, now - stats.HOUR))
        yield ended

        durations = GaugeHistogramMetricFamily(
            "qrq_job_duration_seconds", "Run time (start to finish) of the jobs that finished "
            "in the last hour, per type.", labels=["type"])
        for job_type, found in stats.durations(storage, now - stats.HOUR).items():
            durations.add_metric([job_type], [(_le(le), count) for le, count in found["buckets"]],
                                 gsum_value=found["sum"])
        yield durations

        yield GaugeMetricFamily("qrq_schedule_entries", "Tasks waiting in huey's schedule "
                                "(deferred jobs and retries).", value=stats.schedule_size(storage))

        consumers = stats.consumers(storage, now)
        labels = ["consumer", "host", "pid"]
        heartbeat = GaugeMetricFamily("qrq_consumer_heartbeat_age_seconds",
                                      "Seconds since each consumer's last heartbeat.",
                                      labels=labels)
        workers = GaugeMetricFamily("qrq_consumer_workers", "Workers of each consumer.",
                                    labels=labels)
        running = GaugeMetricFamily("qrq_consumer_running_jobs",
                                    "Jobs each consumer is running now.", labels=labels)
        for consumer in consumers:
            values = [consumer["id"], consumer["host"], str(consumer["pid"])]
            heartbeat.add_metric(values, consumer["heartbeat_age"])
            workers.add_metric(values, consumer["workers"])
            running.add_metric(values, len(consumer["jobs"]))
        yield heartbeat
        yield workers
        yield running
        yield GaugeMetricFamily(
            "qrq_consumer_last_heartbeat_age_seconds", "Seconds since the newest heartbeat of "
            "any consumer (+Inf: none registered).",
            value=min((c["heartbeat_age"] for c in consumers), default=INF))

        paused = GaugeMetricFamily("qrq_job_type_paused", "1 while a job type is paused "
                                   "(consumers start none of its jobs), else 0.",
                                   labels=["type"])
        held = {p["type"] for p in pauses.paused(storage)}
        for job_type in stats.JOB_TYPES:
            paused.add_metric([job_type], 1 if job_type in held else 0)
        yield paused

        firing = {alert["kind"] for alert in self.firing}
        alert = GaugeMetricFamily("qrq_alert_firing", "1 while an alert fires (see the "
                                  "dashboard), else 0.", labels=["kind"])
        for kind in alerts.KINDS:
            alert.add_metric([kind], 1 if kind in firing else 0)
        yield alert
        last = alerts.last_check(storage)
        yield GaugeMetricFamily("qrq_alert_check_age_seconds", "Seconds since the periodic "
                                "alert check last ran in a consumer (+Inf: never).",
                                value=INF if last is None else max(0.0, now - last))


def _add_per_type(family, counts: dict[str, dict[str, int]]) -> None:
    """One sample per (job type, second label) of ``{type: {label: count}}``."""
    for job_type, by_label in counts.items():
        for label, count in by_label.items():
            family.add_metric([job_type, label], count)


def _le(bound) -> str:
    return bound if isinstance(bound, str) else repr(float(bound))


def _check_metrics_auth(settings: Settings) -> None:
    token = bearer_token("send Authorization: Bearer <QRQ_METRICS_TOKEN or an admin's "
                         "or operator's API token>")
    user = token_user(token, also_accept=settings.metrics_token)
    if user is not None:  # None: the metrics token
        check_role(user, request.method)


@bp.get("/metrics")
def metrics():
    """Prometheus text format, read from the queue database at scrape time."""
    settings = current_app.config["QRQ"]
    _check_metrics_auth(settings)
    registry = CollectorRegistry()
    registry.register(QueueCollector(huey.storage, settings, web_alerts()))
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    return Response(encoder(registry), content_type=content_type,
                    headers={"Cache-Control": "no-store"})


# -- /healthz --------------------------------------------------------------------------

@bp.get("/healthz")
def healthz():
    """200 when the web app is up and both databases answer; 503 otherwise (code
    ``storage_full`` when the disk is full, else ``unavailable``, also when the queue's
    key was replaced since this process started). No auth."""
    checks = health.check_databases(huey.storage, huey.serializer)
    failed = sorted(name for name, state in checks.items() if state != "ok")
    if failed:
        full = any(checks[name] == "storage_full" for name in failed)
        body = error_body(503, "storage_full" if full else "unavailable", "; ".join(
            f"{name} {health.MEANINGS[checks[name]]}" for name in failed))
        return jsonify(body), 503, {"Cache-Control": "no-store"}
    return jsonify(status="ok", checks={"web": "ok", **checks}), 200, {
        "Cache-Control": "no-store"}


# -- GET /api/admin/queue-status (routed in admin_api.py) ------------------------------

def queue_status_view() -> dict[str, Any]:
    """The queue status as JSON (the document ``qrq status --json`` prints too)."""
    return queue_status_document(huey.storage, current_app.config["QRQ"], web_alerts())
