"""Job commands: queue a PDF, list and show jobs."""

from __future__ import annotations

import functools
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import click
from click.core import ParameterSource

from qrq import batch
from qrq.appdb.models import Template
from qrq.artifacts import open_store
from qrq.cards.generate import artifact_name, prepare
from qrq.cli.base import (
    JOB_ID,
    NonEmptyPath,
    cli_actor,
    echo_fields,
    echo_json,
    echo_table,
    get_app_db,
    get_queue,
    job_type_param,
    json_option,
    key_values,
    main,
    shorten,
)
from qrq.errors import Unavailable, ValidationError
from qrq.humanize import format_bytes
from qrq.queue import audit, dead_letters, jobs, pauses, roles, stats, submit

KEEP_WAITING = "qrq.keep_waiting"
CONSUMER_GRACE = 6.0  # seconds without a consumer before a wait says so


def wait_options(timeout: float):
    """``--wait``, ``--timeout`` and ``--keep-waiting`` for a command that queues a job.

    The command gets ``wait`` and ``timeout``; :func:`wait_for` reads ``--keep-waiting``.
    ``--timeout`` or ``--keep-waiting`` given alone imply ``--wait`` (as ``qrq pdf
    --out`` does): they only mean something to a wait, and ignoring them left a user
    who asked for a bounded wait with none at all.
    """
    def remember(ctx: click.Context, param, value: bool) -> bool:
        ctx.meta[KEEP_WAITING] = value
        return value

    def decorate(function):
        @functools.wraps(function)
        def command(*args, wait: bool, timeout: float, **kwargs):
            ctx = click.get_current_context()
            asked = (ctx.get_parameter_source("timeout") is not ParameterSource.DEFAULT
                     or ctx.meta.get(KEEP_WAITING, False))
            return function(*args, wait=wait or asked, timeout=timeout, **kwargs)

        for option in reversed((
                click.option("--wait", is_flag=True,
                             help="Wait for the job with a progress bar."),
                click.option("--timeout", type=click.FloatRange(min=0), default=timeout,
                             show_default=True,
                             help="Seconds --wait waits at most (implies --wait)."),
                click.option("--keep-waiting", is_flag=True, expose_value=False,
                             callback=remember,
                             help="Wait even while no consumer is running (one may "
                                  "start later) instead of stopping at once (implies "
                                  "--wait)."))):
            command = option(command)
        return command
    return decorate


def _fresh_heartbeat_age(settings) -> float:
    # A consumer beats every third of a lease (at least each second, qrq/queue/consumer.py);
    # two missed beats and it is gone. A consumer that stops cleanly deregisters at once.
    return 2 * max(1.0, settings.lease_seconds / 3) + 1


def consumer_missing(huey, job_type: str | None = None) -> str | None:
    """Why no consumer runs jobs of *job_type* (none has a fresh heartbeat, or none that
    takes the type does), or None when one does."""
    last = stats.last_heartbeat(huey.storage)
    if last is None:
        return "no consumer is running (none registered)"
    age = time.time() - last
    if age > _fresh_heartbeat_age(huey.settings):
        return f"no consumer is running (the newest heartbeat is {age:.0f}s old)"
    live = [c for c in stats.consumers(huey.storage)
            if c["heartbeat_age"] <= _fresh_heartbeat_age(huey.settings)]
    if not any(roles.takes(c, job_type) for c in live):
        return (f"no running consumer takes {job_type} jobs (see each host's qrq worker "
                "--types and --exclude-types)")
    return None


def wait_for(huey, job_id: str, label: str, timeout: float, *, length: int = 100,
             position: Callable[[dict], int] | None = None) -> dict:
    """Follow a job to its end with a progress bar; return its record: the one wait of
    every ``--wait`` and of ``qrq jobs wait``.

    The bar shows the job's percent, or ``position(job)`` out of *length* (a batch's
    items done). When no consumer has run for ``CONSUMER_GRACE`` seconds it stops and
    says so, unless ``--keep-waiting`` was given; Ctrl-C and the timeout leave the job
    running and say how to follow it again.
    """
    keep_waiting = click.get_current_context().meta.get(KEEP_WAITING, False)
    follow = f"follow it with: qrq jobs wait {job_id}"
    deadline = time.monotonic() + timeout
    next_check, missing_since, warned, told_paused = 0.0, None, False, None
    try:
        job = jobs.get(huey.storage, job_id) or {"status": "gone"}
    except Unavailable:  # the loop below waits it out
        job = {"status": "waiting"}
    try:
        with click.progressbar(length=length, label=_label(label, job), show_percent=True,
                               show_pos=position is not None) as bar:
            done, unreachable = 0, False
            while True:
                try:
                    job = jobs.get(huey.storage, job_id)
                except Unavailable as exc:  # a database restart: the job goes on
                    if not unreachable:
                        click.echo(f"\n{exc.message}; still waiting for job {job_id}",
                                   err=True)
                    unreachable = True
                    if time.monotonic() > deadline:
                        raise click.ClickException(f"{exc.message}; {follow}") from None
                    time.sleep(1)
                    continue
                if unreachable:
                    click.echo("the queue database is back", err=True)
                    unreachable = False
                if job is None:
                    raise click.ClickException(f"job {job_id} no longer exists (purged)")
                now = job["progress"] if position is None else position(job)
                bar.label = _label(label, job)
                bar.update(now - done)
                done = now
                if job["status"] in jobs.ENDED:
                    return job
                clock = time.monotonic()
                if clock >= next_check:
                    next_check = clock + 1
                    try:
                        missing = consumer_missing(huey, job["type"])
                    except Unavailable:  # the next read says so
                        missing = None
                    paused = _paused(huey, job) if job["status"] == "queued" else None
                    if paused and paused != told_paused:
                        newline = "\n" if bar.file.isatty() else ""
                        click.echo(f"{newline}{paused}", err=True)
                    told_paused = paused
                    missing_since = (missing_since or clock) if missing else None
                    warned = warned and bool(missing)
                    # A grace period: a consumer started together with the wait registers
                    # within a second or two.
                    if missing and clock - missing_since >= CONSUMER_GRACE and not warned:
                        if not keep_waiting:
                            raise click.ClickException(
                                f"{missing}: job {job_id} stays {job['status']} until one "
                                f"runs it. Start one (qrq worker, or qrq dev), then {follow} "
                                "(--keep-waiting waits for a consumer to start)")
                        newline = "\n" if bar.file.isatty() else ""  # past the bar's line
                        click.echo(f"{newline}{missing}; waiting until one runs job "
                                   f"{job_id} (start one: qrq worker)", err=True)
                        warned = True
                if clock > deadline:
                    raise click.ClickException(
                        f"job {job_id} still {job['status']} after {timeout:g}s"
                        f"{f' ({told_paused})' if told_paused else ''}; it goes on: {follow}")
                time.sleep(0.1)
    except KeyboardInterrupt:
        click.echo(f"stopped waiting; job {job_id} goes on ({job['status']}): {follow}",
                   err=True)
        raise click.exceptions.Exit(130) from None


def _paused(huey, job: dict) -> str | None:
    """Why a queued *job* does not start though consumers run: its type is paused."""
    try:
        found = pauses.pause_of(huey.storage, job["type"]) if job["type"] else None
    except Unavailable:  # the next read of the job says so
        return None
    if found is None:
        return None
    return (f"{job['type']} jobs are paused (by {found['paused_by'] or '-'}): the job "
            f"waits until `qrq jobs resume {job['type']}`")


def _label(label: str, job: dict) -> str:
    """The bar's label: *label* (what the job does) once it runs, else its state."""
    return label if job["status"] == "running" or job["status"] in jobs.ENDED else (
        f"{job['status']:<{len(label)}}")


def wait_finished(huey, job_id: str, label: str, timeout: float, what: str = "job") -> dict:
    """:func:`wait_for`, then fail the command unless the job finished; return its record."""
    job = wait_for(huey, job_id, label, timeout)
    if job["status"] != "finished":
        raise click.ClickException(f"{what} {job['status']}: {job['error']}")
    return job


@main.command()
@click.argument("template_id", type=int)
@click.option("-o", "--option", "options", multiple=True, metavar="KEY=VALUE",
              callback=key_values,
              help="Override a template field; VALUE is JSON or a bare string, and a "
                   "text field takes it as written (title=2026).")
@wait_options(timeout=600)
@click.option("--out", type=NonEmptyPath(dir_okay=False, path_type=Path),
              help="Save the PDF here (implies --wait; default with --wait: "
                   "./qrq-<job id>.pdf).")
def pdf(template_id: int, options: dict[str, object], wait: bool, out: Path | None,
        timeout: float) -> None:
    """Queue a QR-code PDF of a template and print its job id.

    Example: qrq pdf 1 --option copies=8 --option title="Table 4" --wait
    """
    if out is not None and not out.parent.is_dir():  # found out now, not after the job
        raise click.BadParameter(f"{out.parent} is not a directory", param_hint="--out")
    huey = get_queue()
    with get_app_db().connection_context():
        prepare(Template.get_by_id_or_404(template_id).to_dict(), options,
                huey.settings.max_copies, margin_mm=huey.settings.print_margin_mm)
    job_id = submit("pdf.generate", template_id, options, owner_id=None,
                    params={"template_id": template_id, "options": options})
    click.echo(f"queued job {job_id}")
    if not wait and out is None:
        return
    wait_finished(huey, job_id, "rendering", timeout)
    out = out or Path(f"qrq-{job_id}.pdf")
    try:
        stored, _ = open_store(huey.settings).open(artifact_name(job_id))
    except FileNotFoundError:
        raise click.ClickException(f"the output of job {job_id} is no longer stored") from None
    try:
        with stored, open(out, "wb") as dest:
            shutil.copyfileobj(stored, dest)
    except OSError as exc:
        raise click.ClickException(f"cannot save {out}: {exc.strerror or exc} (the PDF "
                                   f"stays downloadable: qrq jobs show {job_id})") from None
    click.echo(f"saved {out} ({format_bytes(out.stat().st_size)})")


@main.group("jobs")
def jobs_group() -> None:
    """Inspect jobs."""


@jobs_group.command("list")
@click.option("--status", type=click.Choice(jobs.STATES))
@click.option("--type", "job_type", callback=job_type_param,
              help="A job type, such as pdf or batch (a wrong one lists them).")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True,
              help="Jobs per page.")
@click.option("--page", type=click.IntRange(1, 1_000_000), default=1, show_default=True)
@json_option
def jobs_list(status: str | None, job_type: str | None, limit: int, page: int,
              as_json: bool) -> None:
    """List jobs, newest first: short id (any command takes it), type, status, progress,
    creation time and error; then how many match, and the next page's option.

    Example: qrq jobs list --status failed --json
    """
    found, total = stats.search_jobs(get_queue().storage, status=status, job_type=job_type,
                                     limit=limit, offset=(page - 1) * limit)
    if as_json:
        echo_json({"jobs": [jobs.public_view(job, admin=True) for job in found],
                   "total": total, "page": page})
        return
    if found:
        echo_table(("id", "type", "status", "progress", "created", "error"),
                   [(job["id"][:8], job["type"], job["status"], f"{job['progress']}%",
                     jobs.iso(job["created_at"]), shorten(job["error"], 50))
                    for job in found], right=("progress",))
    first = (page - 1) * limit
    shown = f"{first + 1}-{first + len(found)}" if found else "none"
    more = f"; next: --page {page + 1}" if first + len(found) < total else ""
    click.echo(f"{shown} of {total} job(s){f' {status}' if status else ''}{more}")


@jobs_group.command("show")
@click.argument("job_id", type=JOB_ID)
@json_option
def jobs_show(job_id: str, as_json: bool) -> None:
    """Print a job: status, progress, times, parameters, result, error and traceback.

    Example: qrq jobs show 5bc296e7 --json
    """
    storage = get_queue().storage
    view = batch.status_view(storage, jobs.get(storage, job_id), admin=True)
    if as_json:  # the API's status document, but for its URLs (the web app's to make)
        echo_json(view | {"attempts_history": jobs.attempts_view(storage, job_id, admin=True)})
        return
    traceback = view.pop("traceback")
    echo_fields(view)
    if traceback:
        click.echo(f"traceback:\n{traceback.rstrip()}")


@jobs_group.command("wait")
@click.argument("job_id", type=JOB_ID)
@click.option("--timeout", type=click.FloatRange(min=0), default=3600, show_default=True,
              help="Seconds to wait at most.")
@click.option("--keep-waiting", is_flag=True, help="Wait even while no consumer is running.")
def jobs_wait(job_id: str, timeout: float, keep_waiting: bool) -> None:
    """Follow a job to its end with a progress bar; exit 1 unless it finished.

    Ctrl-C stops waiting, not the job.

    Example: qrq jobs wait 5bc296e7
    """
    click.get_current_context().meta[KEEP_WAITING] = keep_waiting
    job = wait_for(get_queue(), job_id, f"job {job_id[:8]}", timeout)
    if job["status"] != "finished":
        raise click.ClickException(f"job {job['status']}: {job['error']}")
    result = jobs.public_view(job)["result"]
    click.echo(f"finished{': ' + json.dumps(result) if result is not None else ''}")


@jobs_group.command("retry")
@click.argument("job_id", type=JOB_ID, required=False)
@click.option("--all-failed", is_flag=True, help="Re-run every failed job.")
def jobs_retry(job_id: str | None, all_failed: bool) -> None:
    """Re-run a failed, canceled or expired job under the same id.

    Example: qrq jobs retry --all-failed
    """
    huey = get_queue()
    if bool(job_id) == all_failed:
        raise click.UsageError("give a JOB_ID or --all-failed" + (", not both" if job_id else ""))
    if job_id:
        huey.retry(job_id)
        audit.record(huey.storage, cli_actor(), "job.retry", job_ids=[job_id])
        click.echo(f"queued {job_id}")
        return
    report = dead_letters.retry_failed(huey)
    audit.record(huey.storage, cli_actor(), "jobs.retry_failed", job_ids=report["retried"],
                 detail={"type": None, "skipped": len(report["skipped"])})
    for one in report["retried"]:
        click.echo(f"queued {one}")
    for skipped in report["skipped"]:
        click.echo(f"skipped {skipped['job_id']}: {skipped['reason']}", err=True)
    click.echo(f"{len(report['retried'])} job(s) queued again")
    if report["skipped"]:
        raise click.ClickException(f"{len(report['skipped'])} failed job(s) could not be "
                                   "retried (listed above)")


@jobs_group.command("purge")
@click.option("--older-than", "older_than", default="30d", show_default=True,
              help="Age since the job ended: 30d, 12h, 90m.")
@click.option("--status", type=click.Choice(jobs.ENDED), help="Only jobs in this state.")
def jobs_purge(older_than: str, status: str | None) -> None:
    """Delete ended jobs (records and files) older than an age.

    Example: qrq jobs purge --older-than 30d --status failed
    """
    huey = get_queue()
    try:
        count = dead_letters.purge_ended(huey.storage, open_store(huey.settings),
                                         older_than, status)
    except ValidationError as exc:
        raise click.BadParameter(exc.message, param_hint="--older-than") from None
    audit.record(huey.storage, cli_actor(), "jobs.purge", count=count,
                 detail={"older_than": older_than, "status": status})
    click.echo(f"purged {count} job(s)")


@jobs_group.command("cancel")
@click.argument("job_id", type=JOB_ID)
def jobs_cancel(job_id: str) -> None:
    """Cancel a job: at once while queued, at its next progress report while running.

    Example: qrq jobs cancel 5bc296e7
    """
    huey = get_queue()
    job = jobs.get(huey.storage, job_id)
    if job["status"] in jobs.ENDED:
        raise click.ClickException(f"job already {job['status']}")
    click.echo(f"{job_id} {huey.cancel(job_id)}")
    audit.record(huey.storage, cli_actor(), "job.cancel", job_ids=[job_id])
