"""Schedule commands: run a periodic task now."""

from __future__ import annotations

import click

from qrq.cli.base import cli_actor, get_queue, main
from qrq.cli.jobs import wait_finished, wait_options
from qrq.queue import audit, catalog, run_periodic_now


@main.group("schedule")
def schedule_group() -> None:
    """Periodic tasks (their schedules: the dashboard's schedule page)."""


class RunnableTask(click.Choice):
    """A periodic task that can run as a job: only those are listed (``--help``, an
    unknown name's error). One that keeps no job record (``alerts.check``) is let
    through, so that the one refusal, :func:`run_periodic_now`'s, says why."""

    def __init__(self) -> None:
        super().__init__([name for name, spec in catalog.PERIODIC.items() if spec.job_type])

    def convert(self, value, param, ctx):
        return value if value in catalog.PERIODIC else super().convert(value, param, ctx)


@schedule_group.command("run")
@click.argument("name", type=RunnableTask())
@wait_options(timeout=3600)
def schedule_run(name: str, wait: bool, timeout: float) -> None:
    """Run a periodic task now, as a job of its own; its schedule goes on.

    Example: qrq schedule run retention.purge --wait
    """
    huey = get_queue()
    job_id = run_periodic_now(name, params={"requested_by": "cli"})
    audit.record(huey.storage, cli_actor(), "schedule.run", job_ids=[job_id],
                 detail={"task": name})
    click.echo(f"queued {name} as job {job_id}")
    if wait:
        wait_finished(huey, job_id, name, timeout)
        click.echo("finished")
