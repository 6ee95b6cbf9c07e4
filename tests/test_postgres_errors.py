"""PostgreSQL trouble, told in one line: at start-up of the web app and the ``qrq``
commands, and as 503 in the error shape while the server is down, until it is back."""

import logging
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from click.testing import CliRunner

from qrq.appdb.db import app_db, init_db
from qrq.appdb.models import User
from qrq.cli import main
from qrq.config import load_settings
from qrq.queue import submit
from tests.clusters import Cluster
from tests.conftest import free_port, wait_until

ROOT = Path(__file__).resolve().parent.parent
PG = ROOT / ".ci" / "postgres"


def with_database(url: str, dbname: str) -> str:
    return url.rsplit("/", 1)[0] + "/" + dbname


def unreachable() -> str:
    return f"postgresql://qrq@127.0.0.1:{free_port()}/qrq"


def no_such_schema(url: str) -> str:
    """*url* with a search_path naming a schema its database lacks."""
    return f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3Dno_such_schema"


@pytest.mark.parametrize("case", ["missing database", "unknown role", "bad url", "unreachable",
                                  "missing schema"])
def test_qrq_commands_say_what_is_wrong_in_one_line(pg_server, tmp_path, case):
    url = {"missing database": with_database(pg_server, "no_such_db"),
           "missing schema": no_such_schema(pg_server),
           "unknown role": pg_server.replace("postgres@", "no_such_role@"),
           "bad url": pg_server + "?no_such_option=1",
           "unreachable": unreachable()}[case]
    expected = {"missing database": "database no_such_db on 127.0.0.1",
                "unknown role": 'refused the login', "bad url": "not a valid PostgreSQL URL",
                "unreachable": "is unreachable: Connection refused",
                "missing schema": "the search_path no_such_schema in QRQ_DATABASE_URL names "
                                  "no schema that exists"}[case]
    data = tmp_path / "data"
    data.mkdir()
    done = CliRunner().invoke(main, ["users", "list"],
                              env={"QRQ_DATA_DIR": str(data), "QRQ_DATABASE_URL": url})
    assert done.exit_code == 1
    lines = done.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and expected in lines[0], \
        done.output
    assert "password" not in lines[0] and "Traceback" not in done.output


def test_the_web_app_refuses_to_start_on_a_missing_database_with_one_line(pg_server,
                                                                          tmp_path):
    env = {**os.environ, "QRQ_DATA_DIR": str(tmp_path / "data"),
           "QRQ_DATABASE_URL": with_database(pg_server, "no_such_db")}
    done = subprocess.run([sys.executable, "-c", "import web"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "no_such_db" in lines[0] \
        and "does not exist" in lines[0], done.stderr


@pytest.mark.parametrize("start", ["import web", "import huey_app"])
def test_the_web_app_and_consumer_refuse_a_search_path_without_its_schema_in_one_line(
        pg_server, tmp_path, start):
    env = {**os.environ, "QRQ_DATA_DIR": str(tmp_path / "data"),
           "QRQ_DATABASE_URL": no_such_schema(pg_server)}
    done = subprocess.run([sys.executable, "-c", start], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: PostgreSQL: the search_path "
                                                   "no_such_schema"), done.stderr
    assert "create the schema" in lines[0]


@pytest.fixture
def own_server():
    """A private PostgreSQL cluster this test may stop and start (never the shared one):
    ``(url, stop, start)``."""
    cluster = Cluster()
    yield cluster.url, lambda: cluster.pg_ctl("stop"), lambda: cluster.pg_ctl("start")
    cluster.close()


@pytest.fixture
def on_own_server(own_server, tmp_path, monkeypatch):
    """A web app on *own_server* with a user: ``(client, headers, stop, start)``."""
    from qrq.web import create_app

    url, stop, start = own_server
    monkeypatch.setenv("QRQ_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("QRQ_DATABASE_URL", url)
    settings = load_settings()
    init_db(url)
    with app_db.connection_context():
        _, token = User.create_with_token("alice")
    client = create_app({"SETTINGS": settings, "TESTING": True}).test_client()
    yield client, {"Authorization": f"Bearer {token}"}, stop, start
    app_db.close_all()


def test_requests_get_503_while_postgresql_is_down_and_work_again_after(on_own_server):
    client, headers, stop, start = on_own_server
    assert client.get("/api/me", headers=headers).status_code == 200
    stop()
    down = client.get("/api/me", headers=headers)
    assert down.status_code == 503
    assert down.get_json()["error"]["code"] == "unavailable"
    assert down.headers["Retry-After"]
    start()
    wait_until(lambda: client.get("/api/me", headers=headers).status_code == 200,
               message="the API answering again")


def watcher_lines(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage().startswith("job watcher")]


def test_the_job_watcher_logs_an_outage_in_one_line_and_its_end_in_one(on_own_server,
                                                                        caplog):
    """While PostgreSQL is down every read of the waiters' watcher fails (about 7 a
    second): one line when that starts, without a traceback, and one when reads work."""
    from qrq.web.api import watcher

    client, headers, stop, start = on_own_server
    with app_db.connection_context():
        owner = User.get(User.name == "alice").id
    job_id = submit("pdf.generate", 1, owner_id=owner)  # no consumer: it stays queued

    def long_poll(seconds: int):
        return client.get(f"/api/jobs/{job_id}?wait={seconds}", headers=headers)

    assert long_poll(1).status_code == 200  # a read that works: the watcher is fine now
    caplog.set_level(logging.INFO, logger="qrq.web")
    caplog.clear()
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(long_poll, 3)
        wait_until(lambda: watcher.waiting(job_id), message="the long-poll to wait")
        stop()
        waiting.result(timeout=60)  # at its deadline: the watcher failed ~20 reads by then
        [outage] = watcher_lines(caplog)
        assert outage.levelname == "ERROR" and outage.exc_info is None
        assert "cannot be reached" in outage.getMessage()
        assert "logged once a minute" in outage.getMessage()
    start()
    wait_until(lambda: long_poll(1).status_code == 200, message="a long-poll answered again")
    lines = watcher_lines(caplog)
    assert len(lines) == 2 and "reads job states again" in lines[1].getMessage()


def test_dashboard_pages_answer_503_pages_while_postgresql_is_down(on_own_server):
    # The error page looked the session up again (to show or hide the action
    # buttons), in the database that was away: a 500 with a traceback per page.
    import re

    client, _, stop, start = on_own_server
    with app_db.connection_context():
        _, token = User.create_with_token("root", admin=True)
    form = client.get("/admin/login").text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)
    assert client.post("/admin/login", data={"name": "root", "token": token,
                                             "csrf_token": csrf}).status_code == 302
    assert client.get("/admin/").status_code == 200
    stop()
    try:
        for path in ("/admin/", "/admin/jobs", "/admin/failed", "/admin/backups"):
            page = client.get(path, headers={"Accept": "text/html"})
            assert page.status_code == 503, (path, page.text[:300])
            assert "text/html" in page.content_type and page.headers["Retry-After"]
            assert "try again" in page.text.lower()
    finally:
        start()


def test_the_scheduler_reads_the_periodic_tasks_while_the_server_is_down(on_own_server):
    # A task without a job type claims its minute in the database: down, it is skipped
    # (its outage logged), where the exception used to end the scheduler's process.
    import datetime

    from qrq.queue import huey

    _, _, stop, start = on_own_server
    now = datetime.datetime.now()
    names = {task.name for task in huey.read_periodic(now)}
    assert "alerts.check" in names  # once a minute, no job type
    stop()
    try:
        down = huey.read_periodic(now + datetime.timedelta(minutes=1))  # no exception
    finally:
        start()
    assert all(task.job_type for task in down)  # those with a job type go to enqueue
    assert "alerts.check" not in {task.name for task in down}


def test_the_first_request_after_a_restart_is_answered(on_own_server):
    # The pools' idle connections died with the server; none may be lent as it is.
    client, headers, stop, start = on_own_server
    for _ in range(2):  # the queue's pool and the app database's hold idle connections
        assert client.get("/api/jobs?limit=1", headers=headers).status_code == 200
        stop()
        start()
        first = client.get("/api/jobs?limit=1", headers=headers)
        assert first.status_code == 200, first.get_json()


def test_while_the_server_is_down_requests_do_not_wait_on_the_pool(on_own_server):
    """The first use that finds the server down (a dead connection, and the server
    refusing a new one) fails at once, not after the pool's timeout; each one after it
    tries one connection of its own, which a stopped server refuses at once. The first
    request after the server is back is answered from a fresh pool, not from one still
    waiting out its reconnect backoff."""
    from qrq.errors import Unavailable
    from qrq.queue import huey

    client, _, stop, start = on_own_server
    assert client.get("/healthz").status_code == 200
    pool = huey.storage.pool
    stop()
    try:
        with pytest.raises(Unavailable, match="cannot be reached: .*Connection refused"):
            with huey.storage.connection():
                pass
        assert pool.get_stats().get("requests_errors", 0) == 0  # no wait timed out
        assert client.get("/healthz").status_code == 503
        asked = pool.get_stats().get("requests_num", 0)
        for _ in range(3):
            down = client.get("/healthz")
            assert down.status_code == 503 and "queue_db" in down.get_json()["error"][
                "message"]
        assert pool.get_stats().get("requests_num", 0) == asked  # none waited on it
    finally:
        start()
    # (A second or so of 503s may follow: a process tries once a second.)
    wait_until(lambda: client.get("/healthz").status_code == 200, timeout=60,
               message="/healthz answering again")
    assert huey.storage.pool is not pool  # a fresh one, no backoff to wait out
    wait_until(lambda: pool.closed, timeout=60, message="the old pool to be closed")


def test_a_lease_renewed_before_an_outage_is_renewed_again_before_it_lapses(
        on_own_server, monkeypatch):
    # The heartbeat renews every third of the lease. After a failed renewal it tries
    # again within a second: at the interval, a lease renewed just before an outage
    # shorter than the lease lapsed before the next beat, and another consumer ran
    # the job a second time.
    import dataclasses

    from qrq.errors import Unavailable
    from qrq.queue import huey, submit
    from tasks.mail import send_mail_task

    client, _, stop, start = on_own_server
    huey.init(dataclasses.replace(huey.settings, lease_seconds=12.0))  # a beat every 4 s
    storage = huey.storage
    tries = []
    renew = storage.renew_leases

    def counted():
        tries.append(1)
        return renew()

    monkeypatch.setattr(storage, "renew_leases", counted)

    def lease_until():
        try:
            return storage.sql("select lease_until from task", results=True)[0][0]
        except Unavailable:
            return 0.0

    submit(send_mail_task, ["ops@example.com"], "leased", "here", owner_id=None)
    assert storage.dequeue() is not None  # leased here; the heartbeat keeps it
    taken = lease_until()
    wait_until(lambda: lease_until() > taken, timeout=30, message="the first renewal")
    lapses_at = lease_until()  # (the database's clock)
    beats = len(tries)
    stop()
    try:
        wait_until(lambda: len(tries) >= beats + 2, timeout=60,
                   message="two renewals to fail")
    finally:
        start()
    wait_until(lambda: lease_until() > lapses_at, timeout=60, message="a renewal")
    assert lease_until() - 12.0 < lapses_at  # renewed while the lease still held


def test_a_run_that_ends_while_the_server_is_down_keeps_its_outcome(on_own_server, caplog):
    # The end is written again once the server is back (within a lease): the job ends
    # finished, once, instead of its lease lapsing and the whole job running again.
    import threading

    from qrq.queue import huey, jobs, submit
    from tasks.mail import send_mail_task

    _, _, stop, start = on_own_server
    job_id = submit(send_mail_task, ["ops@example.com"], "ends", "now", owner_id=None)
    leased, stopped, outcome = threading.Event(), threading.Event(), {}

    def worker():  # a lease belongs to the thread that took it
        assert huey.storage.dequeue() is not None
        leased.set()
        stopped.wait(60)
        outcome["ended"] = huey.storage.complete(job_id, {"status": "finished",
                                                           "result": {"sent": 1}})

    thread = threading.Thread(target=worker)
    thread.start()
    assert leased.wait(60)
    stop()
    try:
        stopped.set()
        wait_until(lambda: "the end of a run could not be written" in caplog.text
                   or not thread.is_alive(), timeout=60, message="a failed write")
    finally:
        start()
    thread.join(60)
    assert [(e.id, e.status) for e in outcome["ended"]] == [(job_id, "finished")]
    job = jobs.get(huey.storage, job_id)
    assert (job["status"], job["attempts"]) == ("finished", 1)
    assert huey.storage.sql("select count(*) from task", results=True) == [(0,)]


def test_a_dead_connection_while_the_role_is_at_its_limit_is_not_an_outage(own_server):
    # One pooled connection ended (pg_terminate_backend, an idle timeout) while the role
    # is at its connection limit: the server refuses a new one, yet it is there, and
    # the pool's other connection serves the use.
    import psycopg
    from psycopg import conninfo

    from qrq.queue.postgres_connections import PostgresConnections

    url, _, _ = own_server
    others = []
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("create role lim login password 'pw' connection limit 3")
        limited = conninfo.make_conninfo(
            **conninfo.conninfo_to_dict(url) | {"user": "lim", "password": "pw"})
        storage = PostgresConnections(url=limited, timeout=3.0, create_tables=False)
        try:
            held = [storage.pool.getconn() for _ in range(2)]
            first = held[0].info.backend_pid  # lent first again: the pool is a queue
            for conn in held:
                storage.pool.putconn(conn)
            admin.execute("select pg_terminate_backend(%s)", (first,))
            wait_until(lambda: not admin.execute(
                "select 1 from pg_stat_activity where pid = %s", (first,)).fetchone(),
                message="the backend to end")
            with pytest.raises(psycopg.OperationalError, match="too many connections"):
                while True:  # others take the freed slot: the role is at its limit
                    others.append(psycopg.connect(limited))
            assert storage.sql("select 1", results=True) == [(1,)]
            assert storage._down_since is None
        finally:
            for conn in others:
                conn.close()
            storage.reset_connections()


def test_a_pool_with_every_connection_in_use_is_busy_not_down(on_own_server):
    from qrq.errors import Unavailable
    from qrq.queue import huey

    storage = huey.storage
    pool = storage.pool
    pool.timeout = 1.0  # the wait for a free connection (QRQ_BUSY_TIMEOUT), shortened
    held = [pool.getconn() for _ in range(pool.max_size)]
    try:
        with pytest.raises(Unavailable, match="busy: no pooled connection was free"):
            with storage.connection():
                pass
    finally:
        for conn in held:
            pool.putconn(conn)
    with storage.connection() as conn:
        assert conn.execute("select 1").fetchone() == (1,)
    assert storage.pool is pool  # kept: the server never went away


@pytest.mark.postgres_only
def test_a_deadlock_is_unavailable_for_a_moment_not_an_outage(settings):
    # A `qrq status` once deadlocked with a batch's writes, and the batch failed for
    # good with "the queue database cannot be reached". A deadlock the server breaks
    # is a 503 to try again (and a retry for a job), and the server is not "down".
    import threading

    import psycopg

    from qrq.errors import TransientError, Unavailable
    from qrq.queue import huey

    storage = huey.storage
    storage.sql("create table rows (id integer primary key)", commit=True)
    storage.sql("insert into rows values (1), (2)", commit=True)
    with psycopg.connect(settings.database_url, autocommit=True) as other:
        other.execute("set deadlock_timeout = '60s'")  # so that this test's side loses
        other.execute("begin")
        other.execute("select * from rows where id = 1 for update")
        locked = threading.Event()

        def take_2():
            locked.wait(60)
            other.execute("select * from rows where id = 2 for update")

        taker = threading.Thread(target=take_2)
        taker.start()
        try:
            with pytest.raises(Unavailable, match="ended a transaction: deadlock detected") \
                    as caught, storage.db(commit=True) as curs:
                curs.execute("select * from rows where id = 2 for update")
                locked.set()
                wait_until(lambda: storage.sql(
                    "select count(*) from pg_locks where not granted", results=True)[0][0],
                    message="the other side to wait on row 2")
                curs.execute("select * from rows where id = 1 for update")
        finally:
            locked.set()
            taker.join(60)
            other.execute("rollback")
    assert isinstance(caught.value, TransientError)
    assert storage._down_since is None
    assert storage.sql("select count(*) from rows", results=True) == [(2,)]


def test_an_unreachable_server_at_start_up_is_one_line(tmp_path, monkeypatch):
    from qrq.web import create_app

    monkeypatch.setenv("QRQ_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("QRQ_DATABASE_URL", unreachable())
    with pytest.raises(SystemExit) as stopped:
        create_app({"SETTINGS": load_settings(), "TESTING": True})
    message = str(stopped.value)
    assert message.startswith("Error: ") and "Connection refused" in message
    assert "\n" not in message


def test_health_on_a_database_without_qrq_tables_says_so_not_unreachable(pg_url, tmp_path):
    env = {**os.environ, "QRQ_DATABASE_URL": pg_url, "QRQ_DATA_DIR": str(tmp_path / "data")}
    done = subprocess.run([str(Path(sys.executable).parent / "qrq"), "health"], env=env,
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "Error: app database has no qrq tables (run qrq init" in done.stderr
    assert "unreachable" not in done.stderr


def test_a_periodic_run_missed_while_postgresql_is_down_is_queued_once_it_is_back(
        own_server, tmp_path, monkeypatch, caplog):
    """huey's scheduler logs a periodic task it could not queue (a line the outage filter
    keeps to one a minute, whichever task it names) and forgets the run: the nightly
    backup due during a server restart waited a day."""
    import datetime
    import uuid

    import tasks.backup  # noqa: F401 (registers backup.scheduled)
    from qrq.errors import Unavailable
    from qrq.queue import huey, jobs
    from qrq.queue.qrq_huey import PERIODIC_SLOTS

    url, stop, start = own_server
    monkeypatch.setenv("QRQ_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("QRQ_DATABASE_URL", url)
    settings = load_settings()
    settings.ensure_dirs()
    huey.init(settings)
    try:
        scheduler = huey.create_consumer(workers=1, worker_type="thread")._create_scheduler()
        due = datetime.datetime(2026, 12, 1, 2, 0)  # a Tuesday, at the nightly backup
        slot = str(uuid.uuid5(PERIODIC_SLOTS, f"backup.scheduled@{due.isoformat()}"))
        caplog.set_level(logging.INFO)
        stop()
        scheduler.enqueue_periodic_tasks(due)
        start()

        def queued_late():
            scheduler.enqueue_periodic_tasks(due + datetime.timedelta(minutes=1))
            try:
                return jobs.get(huey.storage, slot)
            except Unavailable:
                return None

        job = wait_until(queued_late, message="the missed backup queued")
        assert job["name"] == "backup.scheduled" and job["status"] == "queued"
        scheduler.enqueue_periodic_tasks(due + datetime.timedelta(minutes=2))
        said = [r.getMessage() for r in caplog.records if r.name == "qrq.queue.scheduler"]
        assert "periodic task backup.scheduled due at 2026-12-01 02:00 UTC could not be " \
               "queued then (the queue database failed); queued now" in said
        assert len(said) == len(set(said)), said  # each missed run named once
    finally:
        huey.storage.dispose()
