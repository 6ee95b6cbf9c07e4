"""Fixtures: a fresh data directory per test, the app, its client, a CLI runner,
users with tokens, and a real ``huey_consumer`` subprocess."""

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# huey_app (imported below to register the tasks, as the consumer does) opens the
# queue from the environment; point it at a throwaway directory first so no test
# touches the repository's data/. Each test's `settings` fixture re-opens it.
os.environ["QRQ_DATA_DIR"] = tempfile.mkdtemp(prefix="qrq-import-")
atexit.register(shutil.rmtree, os.environ["QRQ_DATA_DIR"], ignore_errors=True)
# A run started in the background of a non-interactive shell (`... &`) begins with SIGINT
# ignored, and every process a test starts would inherit that (Python then installs no
# KeyboardInterrupt): the tests that press Ctrl-C on a command need it handled here.
signal.signal(signal.SIGINT, signal.default_int_handler)

import pytest  # noqa: E402
from click.testing import CliRunner  # noqa: E402

import huey_app  # noqa: E402,F401  (registers the tasks)
from qrq.appdb.db import app_db, open_app_db  # noqa: E402
from qrq.appdb.models import User  # noqa: E402
from qrq.config import load_settings  # noqa: E402
from qrq.demo import create_templates  # noqa: E402
from qrq.queue import huey  # noqa: E402
from tests.clusters import Cluster  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent




def pytest_configure(config):
    config.addinivalue_line(
        "markers", "sqlite_only(reason): the test is about SQLite itself (WAL, files, its "
        "progress handler); it runs on the SQLite backend only")
    config.addinivalue_line(
        "markers", "postgres_only(reason): the test is about PostgreSQL or its driver; it "
        "runs on the PostgreSQL backend only")


def pytest_generate_tests(metafunc):
    """Run every test that uses a data directory on both backends, except those about
    one of them."""
    if "backend" not in metafunc.fixturenames:
        return
    backends = ["sqlite", "postgres"]
    for only in backends:
        if metafunc.definition.get_closest_marker(f"{only}_only") is not None:
            backends = [only]
    metafunc.parametrize("backend", backends, indirect=True)


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory):
    """The URL of a PostgreSQL server for the tests: ``QRQ_TEST_DATABASE_URL`` (CI
    starts one with .ci/postgres), else a private cluster started here. Missing
    PostgreSQL fails the run under CI and skips the PostgreSQL tests elsewhere."""
    url = os.environ.get("QRQ_TEST_DATABASE_URL")
    if url:
        yield url
        return
    cluster = Cluster()
    yield cluster.url
    cluster.close()


@pytest.fixture
def pg_url(pg_server):
    """A URL whose connections see a fresh, empty schema of their own (dropped after)."""
    import psycopg

    schema = f"t_{os.urandom(6).hex()}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f"create schema {schema}")
    sep = "&" if "?" in pg_server else "?"
    yield f"{pg_server}{sep}options=-csearch_path%3D{schema}&application_name={schema}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        # Connections the test left open (a pool, a killed consumer's) must not hold
        # locks the drop waits for.
        conn.execute("select pg_terminate_backend(pid) from pg_stat_activity "
                     "where application_name = %s", (schema,))
        conn.execute(f"drop schema {schema} cascade")


@pytest.fixture
def backend(request, monkeypatch):
    """``sqlite`` or ``postgres``: where the test's qrq keeps its databases."""
    name = getattr(request, "param", "sqlite")
    if name == "postgres":
        monkeypatch.setenv("QRQ_DATABASE_URL", request.getfixturevalue("pg_url"))
    else:
        monkeypatch.delenv("QRQ_DATABASE_URL", raising=False)
    return name


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Inbox:
    """An aiosmtpd handler that keeps every message it is sent."""

    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's name)
        self.messages.append(envelope)
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp_server():
    """A real SMTP server (aiosmtpd) on 127.0.0.1: ``(inbox, port)``."""
    from aiosmtpd.controller import Controller

    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield inbox, controller.port
    controller.stop()


@pytest.fixture
def settings(tmp_path, monkeypatch, backend):
    data = tmp_path / "data"
    monkeypatch.setenv("QRQ_DATA_DIR", str(data))
    settings = load_settings(lease_seconds=3.0)
    settings.ensure_dirs()
    huey.init(settings)
    open_app_db(settings)
    yield settings
    huey.storage.dispose()  # its lease heartbeat too: a test may leave a lease held
    app_db.close()


@pytest.fixture
def app(settings):
    from qrq.web import create_app

    return create_app({"SETTINGS": settings, "TESTING": True})


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(settings):
    return CliRunner(env={"QRQ_DATA_DIR": str(settings.data_dir)})


@pytest.fixture
def templates(settings):
    with app_db.connection_context():
        create_templates()


@pytest.fixture
def make_user(settings):
    def make(name, admin=False, email=None):
        with app_db.connection_context():
            user, token = User.create_with_token(name, admin=admin, email=email)
        return user, {"Authorization": f"Bearer {token}"}
    return make


@pytest.fixture
def alice(make_user):
    return make_user("alice", email="alice@example.com")


def wait_until(predicate, timeout=30.0, interval=0.02, message="condition"):
    """Poll *predicate* until it returns something truthy; fail after *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


class Consumer:
    """A real ``huey_consumer huey_app.huey`` subprocess on the test's data directory."""

    def __init__(self, settings, workers=2, extra_env=None, args=(), periodic=False):
        self.settings = settings
        self.workers = workers
        # Periodic tasks (hourly retention, analytics warm-up, ...) would add jobs
        # whenever a test crosses their minute; tests that want them say so.
        self.periodic = periodic
        self.env = {**os.environ, "QRQ_DATA_DIR": str(settings.data_dir),
                    "QRQ_LEASE_SECONDS": str(settings.lease_seconds),
                    **(extra_env or {})}
        self.args = list(args)
        self.log = settings.logs_dir / "test-consumer.log"
        self.proc = None

    def start(self):
        cmd = [str(Path(sys.executable).parent / "huey_consumer"), "huey_app.huey",
               "-w", str(self.workers), "-k", "process", "-d", "0.02", "-m", "0.02",
               "-b", "1.0", "-g", "TERM", *([] if self.periodic else ["-n"]), *self.args]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def kill(self, sig=9):
        """Signal the whole process group (consumer and its worker processes)."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=60)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()

    def output(self):
        return self.log.read_text(errors="replace")


@pytest.fixture
def consumer(settings):
    started = []

    def start(**kwargs):
        proc = Consumer(settings, **kwargs).start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs under tmp_path, to fill up for real (tests run as root)."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs",
                           str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)
