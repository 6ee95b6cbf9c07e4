"""Job commands: queue a PDF, list and show jobs."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import click

from qrq.cli.base import get_app_db, get_queue, main
from qrq.queue import jobs


def _parse_option(value: str) -> tuple[str, object]:
    key, sep, raw = value.partition("=")
    if not sep or not key:
        raise click.BadParameter(f"{value!r} is not KEY=VALUE", param_hint="--option")
    try:
        return key, json.loads(raw)
    except json.JSONDecodeError:
        return key, raw  # a bare word is a string


def wait_for(huey, job_id: str, label: str, timeout: float, *, length: int = 100,
             position: Callable[[dict], int] | None = None) -> dict:
    """Poll a job to its end with a progress bar; return its record. The bar shows the
    job's percent, or ``position(job)`` out of *length* (a batch's items done)."""
    deadline = time.monotonic() + timeout
    with click.progressbar(length=length, label=label, show_percent=True,
                           show_pos=position is not None) as bar:
        done = 0
        while True:
            job = jobs.get(huey.storage, job_id)
            now = job["progress"] if position is None else position(job)
            bar.update(now - done)
            done = now
            if job["status"] in jobs.ENDED:
                return job
            if time.monotonic() > deadline:
                raise click.ClickException(f"job {job_id} still {job['status']} after "
                                           f"{timeout:g}s; is a consumer running (qrq worker)?")
            time.sleep(0.1)


@main.command()
@click.argument("template_id", type=int)
@click.option("-o", "--option", "options", multiple=True, metavar="KEY=VALUE",
              help="Override a template field; VALUE is JSON or a bare string.")
@click.option("--wait", is_flag=True, help="Wait with a progress bar and save the PDF.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Where --wait saves the PDF (default: ./qrq-<job id>.pdf).")
@click.option("--timeout", type=float, default=600, show_default=True,
              help="Seconds --wait waits.")
def pdf(template_id: int, options: tuple[str, ...], wait: bool, out: Path | None,
        timeout: float) -> None:
    """Queue a QR-code PDF of a template and print its job id.

    Example: qrq pdf 1 --option copies=8 --option title="Table 4" --wait
    """
    from qrq.appdb.models import Template
    from qrq.cards.generate import artifact_path, prepare
    from qrq.queue import submit
    from tasks.pdf import generate_qr_pdf

    huey = get_queue()
    parsed = dict(_parse_option(o) for o in options)
    with get_app_db().connection_context():
        prepare(Template.get_by_id_or_404(template_id).to_dict(), parsed,
                huey.settings.max_copies)
    job_id = submit(generate_qr_pdf, template_id, parsed, owner_id=None,
                    params={"template_id": template_id, "options": parsed})
    click.echo(f"queued job {job_id}")
    if not wait:
        return
    job = wait_for(huey, job_id, "rendering", timeout)
    if job["status"] != "finished":
        raise click.ClickException(f"job {job['status']}: {job['error']}")
    out = out or Path(f"qrq-{job_id}.pdf")
    out.write_bytes(artifact_path(huey.settings, job_id).read_bytes())
    click.echo(f"saved {out} ({out.stat().st_size} bytes)")


@main.group("jobs")
def jobs_group() -> None:
    """Inspect jobs."""


@jobs_group.command("list")
@click.option("--status", type=click.Choice(jobs.STATES))
@click.option("--type", "job_type", help="pdf, batch, analytics or maintenance.")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
def jobs_list(status: str | None, job_type: str | None, limit: int) -> None:
    """List jobs, newest first."""
    for job in jobs.list_jobs(get_queue().storage, status=status, job_type=job_type,
                              limit=limit):
        view = jobs.public_view(job)
        click.echo(f"{job['id']}  {job['type']:<10} {job['status']:<9} "
                   f"{job['progress']:>3}%  {view['created_at']}  {job['error'] or ''}")


@jobs_group.command("show")
@click.argument("job_id")
def jobs_show(job_id: str) -> None:
    """Print a job as JSON, traceback included."""
    job = jobs.get(get_queue().storage, job_id)
    if job is None:
        raise click.ClickException(f"no job {job_id}")
    click.echo(json.dumps(jobs.public_view(job, admin=True), indent=2))


@jobs_group.command("retry")
@click.argument("job_id", required=False)
@click.option("--all-failed", is_flag=True, help="Re-run every failed job.")
def jobs_retry(job_id: str | None, all_failed: bool) -> None:
    """Re-run a failed, canceled or expired job under the same id.

    Example: qrq jobs retry --all-failed
    """
    huey = get_queue()
    if bool(job_id) == all_failed:
        raise click.UsageError("give a JOB_ID or --all-failed, not both")
    ids = [job_id] if job_id else [
        job["id"] for job in jobs.list_jobs(huey.storage, status="failed", limit=10**6)]
    for one in ids:
        huey.retry(one)
        click.echo(f"queued {one}")
    click.echo(f"{len(ids)} job(s) queued again")


@jobs_group.command("purge")
@click.option("--older-than", "older_than", default="30d", show_default=True,
              help="Age since the job ended: 30d, 12h, 90m.")
@click.option("--status", type=click.Choice(jobs.ENDED), help="Only jobs in this state.")
def jobs_purge(older_than: str, status: str | None) -> None:
    """Delete ended jobs (records and files) older than an age.

    Example: qrq jobs purge --older-than 30d --status failed
    """
    from qrq.queue.retention import parse_age, purge_jobs

    try:
        seconds = parse_age(older_than)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--older-than") from None
    huey = get_queue()
    count = purge_jobs(huey.storage, huey.settings.artifacts_dir, seconds,
                       (status,) if status else jobs.ENDED)
    click.echo(f"purged {count} job(s)")


@jobs_group.command("cancel")
@click.argument("job_id")
def jobs_cancel(job_id: str) -> None:
    """Cancel a job: at once while queued, at its next progress report while running."""
    huey = get_queue()
    job = jobs.get(huey.storage, job_id)
    if job is None:
        raise click.ClickException(f"no job {job_id}")
    if job["status"] in jobs.ENDED:
        raise click.ClickException(f"job already {job['status']}")
    click.echo(f"{job_id} {huey.cancel(job_id)}")
