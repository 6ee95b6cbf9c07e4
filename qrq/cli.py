"""The ``qrq`` command: set up, run, and inspect qrq from a terminal.

The commands only parse arguments, call the library and print; library errors
become ``click.ClickException`` (exit 1), bad arguments ``BadParameter`` (exit 2).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import click

from qrq import jobs
from qrq.config import load_settings
from qrq.errors import QrqError

DEMO_USER = "demo"


def _settings():
    try:
        return load_settings()
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None


def _queue():
    """The configured Huey instance with its tasks registered (as the consumer has them)."""
    import huey_app

    settings = _settings()
    if settings != huey_app.huey.settings:
        huey_app.huey.configure(settings)
    return huey_app.huey


def _app_db():
    from qrq.db import init_db

    settings = _settings()
    settings.ensure_dirs()
    return init_db(settings.app_db, settings.busy_timeout)


class CliGroup(click.Group):
    """Turns qrq's errors into click's: a one-line ``Error:`` and exit status 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except QrqError as exc:
            where = f" ({exc.field})" if exc.field else ""
            raise click.ClickException(f"{exc.message}{where}") from None


@click.group(cls=CliGroup)
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Data directory (default: $QRQ_DATA_DIR or ./data).")
@click.version_option(package_name="qrq")
def main(data_dir: Path | None) -> None:
    """qrq: background jobs for QRCards on one SQLite file.

    Example: qrq dev
    """
    if data_dir is not None:
        os.environ["QRQ_DATA_DIR"] = str(data_dir.resolve())


# -- setup ------------------------------------------------------------------------------

@main.command()
@click.option("--demo", is_flag=True, help="Also create demo templates and a demo user.")
def init(demo: bool) -> None:
    """Create the data directory, the databases and the signing secret.

    Example: qrq init --demo
    """
    from qrq import demo as demo_data

    settings = _settings()
    db = _app_db()
    _queue()  # creates queue.db and its tables
    click.echo(f"data directory: {settings.data_dir}")
    if demo:
        with db.connection_context():
            added = demo_data.create_templates()
            click.echo(f"demo templates: {added} added")
            token = demo_data.create_user(DEMO_USER)
        if token:
            click.echo(f"demo user {DEMO_USER!r} created; its API token (shown once):")
            click.echo(token)
        else:
            click.echo(f"demo user {DEMO_USER!r} exists; `qrq users reset-token "
                       f"{DEMO_USER}` prints a new token")


# -- running ----------------------------------------------------------------------------

def consumer_options(settings, workers: int | None = None,
                     worker_type: str | None = None) -> dict:
    """The consumer configuration qrq ships (see README, "Running the consumer")."""
    return {
        "workers": workers or settings.workers,
        "worker_type": worker_type or settings.worker_type,
        "initial_delay": settings.poll_interval,
        "max_delay": settings.poll_interval,
        "backoff": 1.0,
        "scheduler_interval": 1,
        "periodic": True,
        "check_worker_health": True,
        "health_check_interval": 5,
        "graceful_signal": "TERM",
        "shutdown_timeout": 30,
    }


def setup_logging(settings, name: str) -> None:
    import logging

    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    fmt = logging.Formatter("[%(asctime)s] %(levelname)s %(name)s %(process)d: %(message)s")
    root = logging.getLogger()
    root.setLevel(settings.log_level.upper())
    for handler in (logging.StreamHandler(), logging.FileHandler(settings.logs_dir / name)):
        handler.setFormatter(fmt)
        root.addHandler(handler)


@main.command()
@click.option("-w", "--workers", type=click.IntRange(1, 64), help="Worker count.")
@click.option("-k", "--worker-type", type=click.Choice(["process", "thread"]),
              help="process enforces time limits; thread uses less memory.")
def worker(workers: int | None, worker_type: str | None) -> None:
    """Run the consumer with qrq's recommended settings (SIGTERM stops it gracefully).

    Example: qrq worker -w 4
    """
    huey = _queue()
    setup_logging(huey.settings, "consumer.log")
    consumer = huey.create_consumer(**consumer_options(huey.settings, workers, worker_type))
    consumer.run()


@main.command()
@click.option("--host", help="Bind address (default: QRQ_HOST).")
@click.option("--port", type=int, help="Port (default: QRQ_PORT).")
@click.option("-w", "--workers", type=click.IntRange(1, 64), help="Consumer workers.")
def dev(host: str | None, port: int | None, workers: int | None) -> None:
    """Set up demo data, then run the web app and the consumer together; Ctrl-C stops both.

    Example: qrq dev --port 8000
    """
    settings = _settings()
    ctx = click.get_current_context()
    ctx.invoke(init, demo=True)
    host, port = host or settings.host, port or settings.port
    env = {**os.environ, "QRQ_DATA_DIR": str(settings.data_dir)}
    worker_cmd = [sys.executable, "-m", "qrq", "worker"]
    if workers:
        worker_cmd += ["-w", str(workers)]
    web_cmd = [sys.executable, "-m", "waitress", f"--listen={host}:{port}", "--threads=8",
               "web:app"]
    procs = [subprocess.Popen(worker_cmd, env=env), subprocess.Popen(web_cmd, env=env)]
    click.echo(f"web app: http://{host}:{port}/api/templates   consumer: {len(procs) - 1} "
               f"process group; logs in {settings.logs_dir}. Ctrl-C stops both.")
    try:
        while all(p.poll() is None for p in procs):
            time.sleep(0.2)
        click.echo("a process exited; stopping the other", err=True)
    except KeyboardInterrupt:
        click.echo("stopping…", err=True)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 40
        for proc in procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# -- users ------------------------------------------------------------------------------

@main.group()
def users() -> None:
    """Manage API users and tokens."""


@users.command("create")
@click.argument("name")
@click.option("--admin", is_flag=True, help="May see every job and use admin endpoints.")
@click.option("--email", help="Address for completion mail.")
def users_create(name: str, admin: bool, email: str | None) -> None:
    """Create a user; the API token is printed once, on the last line.

    Example: qrq users create alice --email alice@example.com
    """
    from qrq.models import User

    with _app_db().connection_context():
        user, token = User.create_with_token(name, admin=admin, email=email)
    click.echo(f"created user {user.name!r} (id {user.id}{', admin' if admin else ''})")
    click.echo(token)


@users.command("reset-token")
@click.argument("name")
def users_reset_token(name: str) -> None:
    """Replace a user's API token; the new one is printed once, on the last line."""
    from qrq.models import User

    with _app_db().connection_context():
        user = User.get_or_none(User.name == name)
        if user is None:
            raise click.ClickException(f"no user {name!r}")
        token = user.reset_token()
    click.echo(f"new token for {name!r}; the old one no longer works")
    click.echo(token)


@users.command("list")
def users_list() -> None:
    """List users."""
    from qrq.models import User

    with _app_db().connection_context():
        for user in User.select().order_by(User.id):
            flags = " admin" if user.is_admin else ""
            click.echo(f"{user.id:>4}  {user.name:<20} {user.email or '-':<30}{flags}")


# -- templates --------------------------------------------------------------------------

@main.group()
def templates() -> None:
    """List, show and add card templates."""


@templates.command("list")
def templates_list() -> None:
    """List templates."""
    from qrq.models import Template

    with _app_db().connection_context():
        for t in Template.select().order_by(Template.id):
            click.echo(f"{t.id:>4}  {t.name:<32} {t.page_size:<8} {t.grid:<5} {t.domain}")


@templates.command("show")
@click.argument("template_id", type=int)
def templates_show(template_id: int) -> None:
    """Print a template as JSON."""
    from qrq.models import Template

    with _app_db().connection_context():
        click.echo(json.dumps(Template.get_by_id_or_404(template_id).to_dict(), indent=2))


@templates.command("add")
@click.argument("json_file", type=click.File("r"))
def templates_add(json_file) -> None:
    """Add a template from a JSON file (fields as `qrq templates show` prints; - for stdin).

    Example: qrq templates add card.json
    """
    from qrq.demo import add_template

    try:
        fields = json.load(json_file)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="JSON_FILE") from None
    with _app_db().connection_context():
        template = add_template(fields)
    click.echo(f"added template {template.id}: {template.name}")


# -- jobs -------------------------------------------------------------------------------

def _parse_option(value: str) -> tuple[str, object]:
    key, sep, raw = value.partition("=")
    if not sep or not key:
        raise click.BadParameter(f"{value!r} is not KEY=VALUE", param_hint="--option")
    try:
        return key, json.loads(raw)
    except json.JSONDecodeError:
        return key, raw  # a bare word is a string


def wait_for(huey, job_id: str, label: str, timeout: float) -> dict:
    """Poll a job to its end with a progress bar; return its record."""
    deadline = time.monotonic() + timeout
    with click.progressbar(length=100, label=label, show_percent=True) as bar:
        done = 0
        while True:
            job = jobs.get(huey.storage, job_id)
            bar.update(job["progress"] - done)
            done = job["progress"]
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
    from qrq.generate import artifact_path, prepare
    from qrq.models import Template
    from qrq.queue import submit
    from tasks.pdf import generate_qr_pdf

    huey = _queue()
    parsed = dict(_parse_option(o) for o in options)
    with _app_db().connection_context():
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
    for job in jobs.list_jobs(_queue().storage, status=status, job_type=job_type,
                              limit=limit):
        view = jobs.public_view(job)
        click.echo(f"{job['id']}  {job['type']:<10} {job['status']:<9} "
                   f"{job['progress']:>3}%  {view['created_at']}  {job['error'] or ''}")


@jobs_group.command("show")
@click.argument("job_id")
def jobs_show(job_id: str) -> None:
    """Print a job as JSON, traceback included."""
    job = jobs.get(_queue().storage, job_id)
    if job is None:
        raise click.ClickException(f"no job {job_id}")
    click.echo(json.dumps(jobs.public_view(job, admin=True), indent=2))
