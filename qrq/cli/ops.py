"""Operations commands: health checks for systemd and containers, the queue status, alerts."""

from __future__ import annotations

import socket

import click

from qrq import alerts
from qrq.appdb.db import open_app_db
from qrq.cli.base import echo_json, echo_table, get_app_db, get_queue, json_option, main
from qrq.health import MEANINGS, check_databases, heartbeat_age
from qrq.health import logger as health_log
from qrq.notify import send_mail
from qrq.status import queue_status_document


@main.command()
@click.option("--consumer", "check_consumer", is_flag=True,
              help="Also require a fresh consumer heartbeat.")
@click.option("--this-host", is_flag=True,
              help="With --consumer: only count consumers on this host (in a container, "
                   "the consumer in this container).")
@click.option("--max-age", type=click.FloatRange(min=0.1),
              help="Heartbeat age in seconds still counted as alive "
                   "(default: QRQ_ALERT_HEARTBEAT_AGE).")
def health(check_consumer: bool, this_host: bool, max_age: float | None) -> None:
    """Exit 0 when the databases answer (and, with --consumer, a consumer is alive); else 1.

    For a systemd watchdog or a container health check.

    Example: qrq health --consumer --this-host
    """
    huey = get_queue()
    # Bound, not created: a health check changes nothing, and a broken file is reported.
    open_app_db(huey.settings, create=False)
    details: dict[str, str] = {}
    # The reasons go into the one line below, not first into a log line of their own.
    quiet, health_log.disabled = health_log.disabled, True
    try:
        checks = check_databases(huey.storage, details=details)
    finally:
        health_log.disabled = quiet
    failed = {name: state for name, state in checks.items() if state != "ok"}
    if failed:
        raise click.ClickException("; ".join(
            f"{name.replace('_db', ' database')} {MEANINGS[state]}"
            + (f" ({details[name]})" if name in details else "")
            for name, state in failed.items()))
    if not check_consumer:
        click.echo("ok: databases reachable")
        return
    limit = huey.settings.alert_heartbeat_age if max_age is None else max_age
    where = f" on {socket.gethostname()}" if this_host else ""
    age = heartbeat_age(huey.storage, socket.gethostname() if this_host else None)
    if age is None:
        raise click.ClickException(f"no consumer registered{where}")
    if age > limit:
        raise click.ClickException(f"no consumer heartbeat{where} in the last {limit:g}s "
                                   f"(newest {age:.0f}s ago)")
    click.echo(f"ok: consumer heartbeat{where} {age:.1f}s ago")


@main.command()
@json_option
def status(as_json: bool) -> None:
    """Print job counts per type, the oldest queued job's age, the consumers and the
    alerts firing; --json prints the document GET /api/admin/queue-status answers.

    Example: qrq status --json
    """
    huey = get_queue()
    firing = alerts.record(huey.storage, alerts.evaluate(huey.storage, huey.settings))
    report = queue_status_document(huey.storage, huey.settings, firing)
    if as_json:
        echo_json(report)
        return
    columns = ("queued", "scheduled", "running", "retrying", "failed", "finished_last_hour")
    echo_table(("type", *(c.replace("_last_hour", "/1h") for c in columns), "oldest queued"),
               [(job_type + (" (paused)" if counts["paused"] else ""),
                 *(counts[c] for c in columns),
                 "-" if counts["oldest_queued_age_seconds"] is None
                 else f"{counts['oldest_queued_age_seconds']:.0f}s")
                for job_type, counts in report["types"].items()],
               right=(*(c.replace("_last_hour", "/1h") for c in columns), "oldest queued"))
    for paused in report["paused"]:
        click.echo(f"paused {paused['type']}: since {paused['paused_at']} by "
                   f"{paused['paused_by'] or '-'}, {paused['queued']} queued jobs wait")
    if not report["consumers"]:
        click.echo("no consumer registered")
    for consumer in report["consumers"]:
        gone = "" if consumer["alive"] else " (gone: no heartbeat)"
        role = (f"only {', '.join(consumer['job_types'])}" if consumer["job_types"]
                else "all types") + (f" except {', '.join(consumer['exclude_job_types'])}"
                                     if consumer["exclude_job_types"] else "")
        click.echo(f"consumer {consumer['id']}{gone}: {consumer['workers']} workers "
                   f"({role}), heartbeat {consumer['heartbeat_age_seconds']:.0f}s ago, "
                   f"{len(consumer['current_jobs'])} running")
    for alert in report["alerts"]:
        click.echo(alerts.line(alert))


@main.command("alerts")
@click.option("--mail/--no-mail", default=True, show_default=True,
              help="Mail the admins about alerts that may be mailed now.")
def alerts_command(mail: bool) -> None:
    """Check the alerts once (as the consumer does each minute) and print those firing.

    Exits 1 when an alert fires, so cron or a monitor can act on it (not for a notice
    alone, such as a paused job type).

    Example: qrq alerts --no-mail
    """
    huey = get_queue()
    settings = huey.settings
    get_app_db()
    firing = alerts.record(huey.storage, alerts.evaluate(huey.storage, settings))
    if mail and firing:
        alerts.mail_alerts(huey.storage, settings, firing, alerts.recipients(settings),
                           lambda to, subject, body: send_mail(settings, to, subject, body))
    if not firing:
        click.echo("ok: no alert")
        return
    for alert in firing:
        click.echo(alerts.line(alert))
    if any(alert["kind"] not in alerts.NOTICES for alert in firing):
        raise SystemExit(1)
