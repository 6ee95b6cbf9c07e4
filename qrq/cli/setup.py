"""Setting up and running: init, dev, worker, serve."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import click

from qrq import demo as demo_data
from qrq.appdb.models import User
from qrq.cli.base import get_app_db, get_queue, get_settings, job_type_names_param, main
from qrq.queue import huey, load_application
from qrq.web import create_app, server

DEMO_USER = "demo"


@main.command()
@click.option("--demo", is_flag=True, help="Also create demo templates and a demo user.")
def init(demo: bool) -> None:
    """Create the data directory, the databases and the signing secret.

    Example: qrq init --demo
    """
    settings = get_settings()
    get_app_db(new=True)  # also over a lost app.db: starting again with no users
    get_queue()  # creates queue.db and its tables
    click.echo(f"data directory: {settings.data_dir}")
    if demo:
        _create_demo_data(admin=False)


def _create_demo_data(admin: bool) -> None:
    """Demo templates and the demo user (an admin for ``qrq dev``: the dashboard needs one)."""
    with get_app_db().connection_context():
        added = demo_data.create_templates()
        click.echo(f"demo templates: {added} added")
        token = demo_data.create_user(DEMO_USER, admin=admin)
        # As it is: a demo user made an admin by `qrq dev` stays one.
        role = {"admin": "an admin", "operator": "an operator", "user": "a user"}[
            User.get(User.name == DEMO_USER).role]
    if token:
        click.echo(f"demo user {DEMO_USER!r} ({role}) created; its API token (shown once):")
        click.echo(token)
    else:
        click.echo(f"demo user {DEMO_USER!r} ({role}) exists; `{qrq_command()} users "
                   f"reset-token {DEMO_USER}` prints a new token")


def qrq_command() -> str:
    """How to run this qrq from the current directory: ``qrq`` when that is the one on
    PATH, else its path (``.venv/bin/qrq`` before the venv is activated)."""
    here = Path(sys.argv[0]).resolve()
    on_path = shutil.which("qrq")
    if here.name != "qrq" or (on_path and Path(on_path).resolve() == here):
        return "qrq"
    try:
        return str(here.relative_to(Path.cwd()))
    except ValueError:
        return str(here)


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
@click.option("--types", "job_types_", callback=job_type_names_param, metavar="TYPE,...",
              help="Run only these job types (default: QRQ_WORKER_JOB_TYPES, or all).")
@click.option("--exclude-types", callback=job_type_names_param, metavar="TYPE,...",
              help="Never run these job types (default: QRQ_WORKER_EXCLUDE_JOB_TYPES).")
def worker(workers: int | None, worker_type: str | None, job_types_: str | None,
           exclude_types: str | None) -> None:
    """Run the consumer with qrq's recommended settings (SIGTERM stops it gracefully).
    A host's role: --types/--exclude-types choose the job types its workers take (caps
    stay global); tasks without a job type (the alert check) run on any consumer.

    Example: qrq worker -w 4 --types analytics,maintenance
    """
    roles = {name: value for name, value in (("worker_job_types", job_types_),
                                             ("worker_exclude_job_types", exclude_types))
             if value is not None}
    huey.init(get_settings(**roles))
    load_application("huey_app")  # registers the tasks, as `huey_consumer huey_app.huey`
    setup_logging(huey.settings, "consumer.log")
    consumer = huey.create_consumer(**consumer_options(huey.settings, workers, worker_type))
    consumer.run()


@main.command()
@click.option("--host", help="Bind address (default: QRQ_HOST).")
@click.option("--port", type=click.IntRange(1, 65535), help="Port (default: QRQ_PORT).")
@click.option("--threads", type=click.IntRange(1, 256), default=server.THREADS,
              show_default=True, help="Threads that run requests.")
@click.option("--connection-limit", type=click.IntRange(16, 100_000),
              default=server.CONNECTION_LIMIT, show_default=True,
              help="Open connections at most; clients waiting for jobs count here, "
                   "not against the threads.")
@click.option("--client-connection-limit", type=click.IntRange(0, 100_000),
              help="Open connections one client address holds at most (an IPv6 "
                   "client's /64) [default: a tenth of --connection-limit, at least 64; "
                   "0: no limit; none behind QRQ_TRUSTED_PROXIES].")
def serve(host: str | None, port: int | None, threads: int, connection_limit: int,
          client_connection_limit: int | None) -> None:
    """Run the web app under waitress, with clients that wait for a job (`?wait=`,
    the events stream) parked off the request threads.

    Example: qrq serve --host 127.0.0.1 --port 8000
    """
    settings = get_settings()
    setup_logging(settings, "web.log")
    app = create_app({"SETTINGS": settings})
    server.serve(app, host=host or settings.host, port=port or settings.port,
                 threads=threads, connection_limit=connection_limit,
                 per_client=client_connection_limit)


@main.command()
@click.option("--host", help="Bind address (default: QRQ_HOST).")
@click.option("--port", type=click.IntRange(1, 65535), help="Port (default: QRQ_PORT).")
@click.option("-w", "--workers", type=click.IntRange(1, 64), help="Consumer workers.")
def dev(host: str | None, port: int | None, workers: int | None) -> None:
    """Set up demo data (the demo user is an admin here, to log in to the dashboard),
    then run the web app and the consumer together; Ctrl-C (or SIGTERM, or closing the
    terminal) stops both.

    Example: qrq dev --port 8000
    """
    settings = get_settings()
    lock = _hold_dev_lock(settings.data_dir)
    host, port = host or settings.host, port or settings.port
    _check_can_listen(host, port)  # before the demo user's token is shown, once
    click.echo(f"data directory: {settings.data_dir}")
    get_queue()  # creates queue.db and its tables
    _create_demo_data(admin=True)
    env = {**os.environ, "QRQ_DATA_DIR": str(settings.data_dir)}
    worker_cmd = [sys.executable, "-m", "qrq", "worker"]
    if workers:
        worker_cmd += ["-w", str(workers)]
    web_cmd = [sys.executable, "-m", "qrq", "serve", f"--host={host}", f"--port={port}"]
    # SIGTERM (a process manager, `kill`) and SIGHUP (the terminal closed) stop both
    # children as Ctrl-C does, instead of leaving them running without this process.
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupt)
    # Children get sessions of their own, so Ctrl-C reaches only this process,
    # which then stops both gracefully (the consumer gives running jobs back).
    procs = [subprocess.Popen(cmd, env=env, start_new_session=True,
                              preexec_fn=_die_with_parent)
             for cmd in (worker_cmd, web_cmd)]
    base = f"http://{host}:{port}"
    count = workers or settings.workers
    click.echo(f"web app:   {base}/\n"
               f"dashboard: {base}/admin  (log in as {DEMO_USER!r} with its API token)\n"
               f"API docs:  {base}/api/openapi.json  (README.md, \"The API\")\n"
               f"consumer:  {count} worker{'s' if count != 1 else ''}; logs in "
               f"{settings.logs_dir}\nCtrl-C stops both.")
    try:
        while all(p.poll() is None for p in procs):
            time.sleep(0.2)
        click.echo("a process exited; stopping the other", err=True)
        failed = True
    except KeyboardInterrupt:
        click.echo("stopping (Ctrl-C again to kill)", err=True)
        failed = False
    finally:
        _stop(procs)
        lock.close()
    if failed:
        raise click.exceptions.Exit(1)


def _check_can_listen(host: str, port: int) -> None:
    """:raises click.ClickException: *host*:*port* is taken (or not an address here)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET  # as waitress binds it
    try:
        with socket.create_server((host, port), family=family):
            pass
    except OSError as exc:
        hint = " (another port: --port or QRQ_PORT)" if exc.errno == errno.EADDRINUSE else ""
        raise click.ClickException(f"cannot listen on {host}:{port}: "
                                   f"{exc.strerror or exc}{hint}") from None


def _interrupt(signum: int, frame) -> None:
    raise KeyboardInterrupt


def _die_with_parent() -> None:
    """In a child: get SIGTERM when ``qrq dev`` dies, even by SIGKILL (Linux only)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _hold_dev_lock(data_dir):
    """Take ``<data>/dev.lock`` for as long as this process lives, or refuse: a second
    ``qrq dev`` on one data directory would fight the first over its port and jobs."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    lock = open(data_dir / "dev.lock", "a+")  # held until dev ends
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip() or "?"
        lock.close()
        raise click.ClickException(f"qrq dev is already running on {data_dir} (pid "
                                   f"{holder}); stop it first (Ctrl-C in its terminal)"
                                   ) from None
    lock.truncate(0)
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    return lock


def _stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    try:
        for proc in procs:
            proc.wait(timeout=45)
    except (KeyboardInterrupt, subprocess.TimeoutExpired):
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
