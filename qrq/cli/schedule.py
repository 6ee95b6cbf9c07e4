"""Schedule commands: run a periodic task now."""

from __future__ import annotations

import click

from qrq.cli.base import get_queue, main
from qrq.cli.jobs import wait_finished, wait_options
from qrq.queue import catalog, run_periodic_now


@main.group("schedule")
def schedule_group() -> None:
    """Periodic tasks (their schedules: the dashboard's schedule page)."""


@schedule_group.command("run")
@click.argument("name", type=click.Choice(list(catalog.PERIODIC)))
@wait_options(timeout=3600)
def schedule_run(name: str, wait: bool, timeout: float) -> None:
    """Run a periodic task now, as a job of its own; its schedule goes on.

    Example: qrq schedule run retention.purge --wait
    """
    huey = get_queue()
    job_id = run_periodic_now(name, params={"requested_by": "cli"})
    click.echo(f"queued {name} as job {job_id}")
    if wait:
        wait_finished(huey, job_id, name, timeout)
        click.echo("finished")
