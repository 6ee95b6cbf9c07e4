"""Pausing job types: ``qrq jobs pause TYPE``, ``qrq jobs resume TYPE``, ``qrq jobs paused``."""

from __future__ import annotations

import getpass

import click

from qrq.cli.base import echo_json, echo_table, get_queue, json_option
from qrq.cli.jobs import jobs_group
from qrq.queue import pauses
from qrq.queue.jobs import iso
from qrq.queue.stats import JOB_TYPES

TYPE = click.Choice(JOB_TYPES)


def _who() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no user name for this uid (a bare container)
        return "cli"


@jobs_group.command("pause")
@click.argument("job_type", metavar="TYPE", type=TYPE)
def jobs_pause(job_type: str) -> None:
    """Pause a job type: consumers start no new job of it; running jobs finish and
    queued jobs wait (nothing is lost) until `qrq jobs resume TYPE`.

    Example: qrq jobs pause pdf
    """
    click.echo(pauses.describe(pauses.pause(get_queue().storage, job_type, _who())))


@jobs_group.command("resume")
@click.argument("job_type", metavar="TYPE", type=TYPE)
def jobs_resume(job_type: str) -> None:
    """Resume a paused job type: its queued jobs may start at once.

    Example: qrq jobs resume pdf
    """
    click.echo(pauses.describe(pauses.resume(get_queue().storage, job_type)))


@jobs_group.command("paused")
@json_option
def jobs_paused(as_json: bool) -> None:
    """List the paused job types, since when, by whom, and how many jobs wait.

    Example: qrq jobs paused --json
    """
    found = [{**p, "paused_at": iso(p["paused_at"])} for p in pauses.paused(
        get_queue().storage)]
    if as_json:
        echo_json({"paused": found})
    elif not found:
        click.echo("no job type is paused")
    else:
        echo_table(("type", "paused at", "by", "queued"),
                   [(p["type"], p["paused_at"], p["paused_by"] or "-", p["queued"])
                    for p in found], right=("queued",))
