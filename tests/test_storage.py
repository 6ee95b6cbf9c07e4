"""qrq's leased storage: huey's own storage contract, then the leases."""

import os
import shutil
import tempfile
import time

os.environ.setdefault("HUEY_SLOW_TESTS", "1")  # include huey's consumer integration test

import pytest  # noqa: E402
from huey import Huey  # noqa: E402
from huey.tests.base import BaseTestCase  # noqa: E402
from huey.tests.test_storage import StorageTests  # noqa: E402

from qrq.queue.postgres import LeasedPostgresStorage  # noqa: E402
from qrq.queue.sqlite_storage import LeasedSqliteStorage  # noqa: E402
from tests.conftest import wait_until  # noqa: E402


class TestHueyStorageContract(StorageTests, BaseTestCase):
    """huey/tests/test_storage.py's StorageTests, run against qrq's storage."""

    supports_ttl = False  # like huey's SqliteStorage

    def get_huey(self):
        self._dir = tempfile.mkdtemp(prefix="qrq-huey-contract-")
        return Huey("t", storage_class=LeasedSqliteStorage,
                    filename=os.path.join(self._dir, "huey.db"), utc=False)

    def tearDown(self):
        super().tearDown()
        self.huey.storage.close()
        shutil.rmtree(self._dir, ignore_errors=True)


class TestHueyStorageContractPostgres(StorageTests, BaseTestCase):
    """The same contract on the PostgreSQL storage (a fresh schema per test)."""

    supports_ttl = False

    @pytest.fixture(autouse=True)
    def _database(self, pg_url):
        self.url = pg_url

    def get_huey(self):
        return Huey("t", storage_class=LeasedPostgresStorage, url=self.url, utc=False)

    def tearDown(self):
        super().tearDown()
        self.huey.storage.dispose()


def test_contract_includes_the_slow_consumer_test():
    assert "test_consumer_integration" in dir(TestHueyStorageContract)
    assert os.environ.get("HUEY_SLOW_TESTS")


@pytest.fixture
def storage(tmp_path, backend):
    """Storages on one database of the test's backend (each like another consumer's)."""
    made = []

    def make(lease=30.0, **kwargs):
        if backend == "postgres":
            s = LeasedPostgresStorage("q", url=os.environ["QRQ_DATABASE_URL"],
                                      lease_seconds=lease, **kwargs)
        else:
            s = LeasedSqliteStorage("q", filename=str(tmp_path / "q.db"), lease_seconds=lease,
                                    **kwargs)
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop_heartbeat()
        s.dispose()


def rows(storage):
    return storage.sql("select data, lease_owner is not null from task order by id",
                       results=True)


def test_dequeue_leases_instead_of_deleting(storage):
    s = storage()
    s.enqueue(b"a")
    s.enqueue(b"b")
    assert s.dequeue() == b"a"
    assert rows(s) == [(b"a", 1), (b"b", 0)]  # still there, leased
    assert s.queue_size() == 1 and s.backlog() == 2
    s.complete(None, None)
    assert rows(s) == [(b"b", 0)]


def test_a_live_lease_is_never_handed_to_another_consumer(storage):
    first, second = storage(lease=30), storage(lease=30)
    first.enqueue(b"job")
    assert first.dequeue() == b"job"
    assert second.dequeue() is None


def test_an_expired_lease_runs_again_elsewhere(storage):
    dead, alive = storage(lease=0.2), storage(lease=30)
    dead.enqueue(b"job")
    assert dead.dequeue() == b"job"
    dead.stop_heartbeat()  # a dead consumer: nothing renews its lease
    assert alive.dequeue() is None
    deadline = time.monotonic() + 5
    while (data := alive.dequeue()) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert data == b"job"
    # The dead consumer's late completion does not delete the new holder's row.
    dead.complete(None, None)
    assert rows(alive) == [(b"job", 1)]


def test_heartbeat_keeps_a_long_run_leased(storage):
    from tests.conftest import wait_until

    s = storage(lease=1.5)
    s.enqueue(b"slow")
    assert s.dequeue() == b"slow"

    def lease_until():
        return s.sql("select lease_until from task", results=True)[0][0]

    first = lease_until()
    # The heartbeat (every lease/3) pushes the deadline forward while the task runs.
    wait_until(lambda: lease_until() > first + 0.2, timeout=10, message="a renewal")
    other = storage(lease=1.5)
    assert other.dequeue() is None
    s.complete(None, None)
    assert rows(s) == []


def test_release_gives_the_lease_back(storage):
    s = storage()
    s.enqueue(b"job")
    s.dequeue()
    s.release(None)
    assert rows(s) == [(b"job", 0)] and s.queue_size() == 1


@pytest.mark.sqlite_only("SQLite's per-thread connections and synchronous pragma")
def test_each_thread_gets_its_own_connection_and_sync_level(storage):
    import threading

    s = storage()
    assert s.conn.execute("pragma synchronous").fetchone() == (2,)  # FULL: enqueues
    seen = []
    thread = threading.Thread(target=lambda: seen.append(s.conn))
    thread.start()
    thread.join()
    assert seen[0] is not s.conn
    s.close()
    s.synchronous = "normal"  # what the consumer sets for its own writes
    assert s.conn.execute("pragma synchronous").fetchone() == (1,)


def test_a_stock_huey_queue_file_gains_qrq_columns(tmp_path):
    from huey import SqliteHuey

    path = str(tmp_path / "old.db")
    stock = SqliteHuey(filename=path)
    stock.storage.enqueue(b"old work")
    stock.storage.close()
    s = LeasedSqliteStorage("huey", filename=path)
    assert s.dequeue() == b"old work"
    assert rows(s) == [(b"old work", 1)]
    s.close()


def enqueue_while_locked(s, calls) -> None:
    """Run each of *calls* in its own thread while *s*'s write lock is held, as if
    another thread were committing; let go once all of them queue behind it."""
    import threading

    with s.lock:
        threads = [threading.Thread(target=call) for call in calls]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 10
        while len(s._pending) < len(calls) and time.monotonic() < deadline:
            time.sleep(0.005)
    for thread in threads:
        thread.join(10)


@pytest.mark.sqlite_only("SQLite's group commit (PostgreSQL shares WAL flushes itself)")
def test_concurrent_enqueues_share_one_commit(storage):
    """Threads that enqueue while another commits are written in one transaction."""
    s = storage()
    s.enqueue(b"first", job_id="first")
    batches = []
    write_batch = s._write_batch
    s._write_batch = lambda batch: (batches.append(len(batch)), write_batch(batch))[1]
    enqueue_while_locked(s, [lambda i=i: s.enqueue(b"job-%d" % i, job_id=str(i))
                             for i in range(8)])
    assert batches == [8]
    assert s.queue_size() == 9


@pytest.mark.sqlite_only("SQLite's group commit")
def test_one_failing_write_does_not_sink_the_others_in_its_commit(storage):
    from qrq.queue import jobs

    s = storage()
    outcomes = {}

    def enqueue(job_id, eta=None):
        try:
            s.enqueue(job_id.encode(), job_id=job_id, eta=eta,
                      job=jobs.new_record(job_id, "pdf", "qrq.pdf", None))
            outcomes[job_id] = "ok"
        except AttributeError:  # a bad eta fails after its job record was written
            outcomes[job_id] = "failed"

    enqueue_while_locked(s, [lambda: enqueue("a"), lambda: enqueue("bad", object()),
                             lambda: enqueue("b")])
    assert outcomes == {"a": "ok", "b": "ok", "bad": "failed"}
    assert sorted(data for data, _ in rows(s)) == [b"a", b"b"]
    # The failed write's job record went with it: no id without its task.
    assert sorted(i for i, in s.sql("select id from job", results=True)) == ["a", "b"]


@pytest.mark.sqlite_only("SQLite's group commit")
def test_a_write_alone_in_its_commit_needs_no_savepoint_and_fails_whole(storage):
    """A single thread's enqueue is BEGIN, its inserts, COMMIT (issue 18: two statements
    fewer); when it fails nothing of it stays, its job record included."""
    from qrq.queue import jobs

    s = storage()
    s.enqueue(b"warm", job_id="warm")
    statements = []
    s.conn.set_trace_callback(statements.append)
    s.enqueue(b"a", job_id="a", job=jobs.new_record("a", "pdf", "qrq.pdf", None))
    with pytest.raises(AttributeError):  # a bad eta fails after its job record was written
        s.enqueue(b"bad", job_id="bad", eta=object(),
                  job=jobs.new_record("bad", "pdf", "qrq.pdf", None))
    s.conn.set_trace_callback(None)
    assert not [sql for sql in statements if "savepoint" in sql.lower()
                or sql.lower().startswith("release")]
    assert sorted(i for i, in s.sql("select id from job", results=True)) == ["a"]
    assert s.queue_size() == 2


def test_threads_starting_together_share_one_owner_and_keep_their_leases(storage):
    """Worker threads of a fresh process must not each reset the lease state (a
    reset dropped other threads' held rows, whose leases then lapsed mid-run)."""
    import threading

    s = storage()
    for i in range(8):
        s.enqueue(b"%d" % i)
    s._owner_pid = None  # as in a freshly forked worker
    barrier = threading.Barrier(8)

    def work():
        barrier.wait()
        assert s.dequeue() is not None

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    owners = s.sql("select distinct lease_owner from task", results=True)
    assert owners == [(s.owner,)]
    assert s.queue_size() == 0 and s.backlog() == 8  # all eight leased
    assert s.renew_leases() == 8  # the heartbeat still knows every running row
    s.stop_heartbeat()


def lapse(dead, alive, deadline=5.0):
    """Let *dead*'s lease lapse (nothing renews it) and *alive* lease the job."""
    dead.stop_heartbeat()
    end = time.monotonic() + deadline
    while (data := alive.dequeue()) is None and time.monotonic() < end:
        time.sleep(0.05)
    return data


def test_a_run_that_lost_its_lease_cannot_overwrite_the_newer_attempt(storage):
    """Completion is fenced on the lease: two storages on one file, the first
    stalls past its lease, the second takes the job over."""
    import datetime

    from qrq.queue import job_progress, jobs

    stalled, taker = storage(lease=0.2), storage(lease=30)
    job_id = "3f0c8c1e-0000-4000-8000-000000000001"
    stalled.enqueue(b"job", job_id=job_id, job=jobs.new_record(job_id, "pdf", "qrq.pdf", None))
    assert stalled.dequeue() == b"job"
    job_progress.report_progress(stalled, job_id, 30, "stalled here")
    assert lapse(stalled, taker) == b"job"
    job_progress.report_progress(taker, job_id, 10, "second attempt")

    # The stalled run comes back: its progress, retry, release and outcome are refused.
    with pytest.raises(jobs.LeaseLost):
        job_progress.report_progress(stalled, job_id, 90, "late")
    for late in (lambda: stalled.reschedule(b"job", datetime.datetime.now(), job_id,
                                            {"status": "retrying", "error": "late"}),
                 lambda: stalled.release(job_id),
                 lambda: stalled.complete(job_id, {"status": "failed", "error": "late"})):
        stalled._local.row, stalled._local.job_id = 1, job_id  # as if still leased
        late()
        record = jobs.get(taker, job_id)
        assert (record["status"], record["worker"], record["progress"], record["stage"],
                record["error"], record["attempts"]) == (
            "running", taker.owner, 10, "second attempt", None, 2)
        assert rows(taker) == [(b"job", 1)]
        assert taker.sql("select count(*) from schedule", results=True) == [(0,)]
    taker.complete(job_id, {"status": "finished", "result": {"ok": True}})
    assert jobs.get(taker, job_id)["status"] == "finished" and rows(taker) == []


def test_a_batch_lease_takes_over_a_lapsed_lease_as_a_single_lease_does(storage):
    """A worker whose last run was short leases what its poll finds in one statement;
    a job among them whose consumer died gets its second attempt there, its first
    kept as lost to that consumer."""
    from qrq.queue import attempts, jobs

    stalled, taker = storage(lease=0.2), storage(lease=30)
    taker.lease_ahead = True  # a consumer's worker
    ids = [f"3f0c8c1e-0000-4000-8000-00000000001{n}" for n in range(3)]
    for job_id in ids[:2]:
        taker.enqueue(job_id.encode(), job_id=job_id,
                      job=jobs.new_record(job_id, "pdf", "qrq.pdf", None))
    assert taker.dequeue() == ids[0].encode()
    taker.complete(ids[0], {"status": "finished"})  # a short run
    assert stalled.dequeue() == ids[1].encode()
    stalled.stop_heartbeat()  # its consumer died
    wait_until(lambda: taker.sql(f"select count(*) from task where lease_until < "
                                 f"{taker.now_sql}", results=True) == [(1,)],
               message="the stalled lease to lapse")
    taker.enqueue(ids[2].encode(), job_id=ids[2],
                  job=jobs.new_record(ids[2], "pdf", "qrq.pdf", None))
    assert taker.dequeue() == ids[1].encode()
    assert taker.sql("select job_id, lease_owner from task order by id", results=True) == [
        (ids[1], taker.owner), (ids[2], taker.owner)]  # both leased by that poll
    taken, fresh = jobs.get(taker, ids[1]), jobs.get(taker, ids[2])
    assert (taken["status"], taken["worker"], taken["attempts"]) == (
        "running", taker.owner, 2)
    assert [(a["n"], a["worker"], a["outcome"]) for a in
            attempts.list_attempts(taker, ids[1])][0] == (1, stalled.owner, "lost")
    assert (fresh["status"], fresh["worker"], fresh["attempts"]) == (
        "running", taker.owner, 1)


def test_a_job_given_back_starts_again_from_no_progress(storage):
    from qrq.queue import job_progress, jobs

    s = storage()
    job_id = "3f0c8c1e-0000-4000-8000-000000000002"
    s.enqueue(b"job", job_id=job_id, job=jobs.new_record(job_id, "pdf", "qrq.pdf", None))
    s.dequeue()
    job_progress.report_progress(s, job_id, 60, "page 6/10")
    s.release(job_id)  # what a SIGTERM'd run does
    record = jobs.get(s, job_id)
    assert (record["status"], record["progress"], record["stage"], record["attempts"]) == (
        "queued", 0, "", 0)


@pytest.mark.sqlite_only("SQLite's full-disk error")
def test_a_full_disk_is_storage_full_and_passes_when_space_returns(storage):
    """SQLite's "database or disk is full" becomes StorageFull (503, storage_full).

    The full disk is simulated at the SQLite layer (``max_page_count`` gives the
    same SQLITE_FULL as ENOSPC); tests/test_reliability.py fills a real tmpfs.
    """
    from qrq.errors import StorageFull
    from qrq.queue import jobs

    s = storage()
    pages = s.conn.execute("pragma page_count").fetchone()[0]
    s.conn.execute(f"pragma max_page_count = {pages}")
    job_id = "3f0c8c1e-0000-4000-8000-000000000003"
    with pytest.raises(StorageFull) as raised:
        s.enqueue(b"x" * 100_000, job_id=job_id,
                  job=jobs.new_record(job_id, "pdf", "qrq.pdf", None))
    assert (raised.value.status, raised.value.code) == (503, "storage_full")
    assert s.is_full()
    with pytest.raises(StorageFull):
        s.sql("insert into kv (queue, key, value) values ('q', 'k', zeroblob(100000))",
              commit=True)
    assert s.backlog() == 0 and jobs.get(s, job_id) is None  # nothing half-written
    s.conn.execute("pragma max_page_count = 1000000")  # space is back
    s.enqueue(b"x" * 100_000, job_id=job_id, job=jobs.new_record(job_id, "pdf", "qrq.pdf", None))
    assert not s.is_full() and s.backlog() == 1 and jobs.get(s, job_id)["status"] == "queued"


def test_a_workers_completion_leases_its_next_job_and_gives_it_back_when_stopping(settings):
    from qrq.queue import huey, jobs, submit
    from tests import slow_tasks

    first, second = (submit(slow_tasks.noop, owner_id=None) for _ in range(2))
    huey.storage.lease_ahead = True  # as QrqConsumer sets it
    try:
        huey.execute(huey.dequeue())
        # The completion's transaction ended the first and leased the second.
        assert jobs.get(huey.storage, first)["status"] == "finished"
        assert jobs.get(huey.storage, second)["status"] == "running"
        assert huey.storage.sql("select lease_owner from task", results=True) == [
            (huey.storage.owner,)]
        huey.storage.give_back_ahead()  # the worker stops before running it
        record = jobs.get(huey.storage, second)
        assert (record["status"], record["attempts"]) == ("queued", 0)
        assert huey.storage.sql("select lease_owner from task", results=True) == [(None,)]
        task = huey.dequeue()  # an ordinary dequeue takes it again
        assert task.id == second
        huey.execute(task)
        assert jobs.get(huey.storage, second)["status"] == "finished"
    finally:
        huey.storage.lease_ahead = False


def test_an_inline_run_leases_nothing_ahead(settings):
    from qrq.queue import huey, jobs, submit
    from tests import slow_tasks

    first, second = (submit(slow_tasks.noop, owner_id=None) for _ in range(2))
    huey.execute(huey.dequeue())
    assert jobs.get(huey.storage, second)["status"] == "queued"


def test_a_capped_type_at_the_head_of_the_queue_lets_others_pass(storage):
    import threading

    s = storage(caps={"batch": 1})
    if True:
        for data, priority, job_type in ((b"a", 10, "batch"), (b"b", 10, "batch"),
                                         (b"c", 0, "pdf")):
            s.enqueue(data, priority, job_type=job_type)
        got = []

        def take():  # a thread of its own: its leased row stays leased
            got.append(bytes(s.dequeue()))

        for _ in range(2):
            worker = threading.Thread(target=take)
            worker.start()
            worker.join()
        # The first batch row holds the cap, so the second waits and the pdf runs.
        assert got == [b"a", b"c"]


def test_a_skewed_client_clock_cannot_take_a_live_lease(storage, monkeypatch):
    """Lease times are the database's clock: a host whose clock runs an hour ahead
    sees the live lease as live (with the client's clock it would take the job)."""
    holder, skewed = storage(lease=30), storage(lease=30)
    holder.enqueue(b"job")
    assert holder.dequeue() == b"job"
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 3600)
    assert skewed.dequeue() is None
    assert skewed.queue_size() == 0 and skewed.backlog() == 1
    monkeypatch.setattr(time, "time", lambda: real() - 3600)  # and one behind
    holder.renew_leases()
    assert skewed.dequeue() is None


def test_an_idle_worker_wakes_on_enqueue_not_on_its_slow_poll(pg_url):
    """LISTEN/NOTIFY: a worker waiting with a one-minute fallback poll takes a job
    enqueued by another process's storage at once."""
    import threading

    from tests.conftest import wait_until

    worker = LeasedPostgresStorage("q", url=pg_url, idle_poll=60)
    web = LeasedPostgresStorage("q", url=pg_url)
    worker.wait_for_wakeups(poll_interval=0.05)
    got = []

    def work():
        while (data := worker.dequeue()) is None:  # each empty try waits up to a minute
            pass
        got.append(data)

    try:
        assert worker.dequeue() is None  # nothing yet: it waits, then gives up
        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        wait_until(lambda: worker.listener.heard, timeout=10, message="the listener")
        web.enqueue(b"job")
        wait_until(lambda: got, timeout=20, message="the woken worker to take the job")
        assert got == [b"job"]
    finally:
        worker.dispose()
        web.dispose()


def test_a_job_enqueued_twice_under_one_id_is_queued_once(storage):
    """A record that exists (a periodic slot another scheduler enqueued) means the job
    is queued: the second enqueue writes nothing and returns the id (on PostgreSQL
    through the one-statement submit, qrq.queue.postgres_submit)."""
    from qrq.queue import jobs
    from qrq.queue.admission import Admission

    s = storage()
    for _ in range(2):
        assert s.enqueue(b"slot", priority=5, job_id="p", job_type="maintenance",
                         job=jobs.new_record("p", "maintenance", "qrq.m", 3),
                         admission=Admission(max_active=10)) == "p"
    assert s.sql("select data, priority, job_id, job_type from task", results=True) == [
        (b"slot", 5.0, "p", "maintenance")]
    assert s.sql("select owner_id, status, payload from job", results=True) == [
        (3, "queued", b"slot")]


def test_a_submit_with_a_quota_wakes_idle_workers(pg_url):
    """The one-statement submit sends the notification with its insert."""
    from qrq.queue import jobs
    from qrq.queue.admission import Admission
    from tests.conftest import wait_until

    worker = LeasedPostgresStorage("q", url=pg_url)
    web = LeasedPostgresStorage("q", url=pg_url)
    try:
        worker.listener.start()
        wait_until(lambda: worker.listener.heard, timeout=10, message="the listener")
        heard = worker.listener.heard
        web.enqueue(b"job", job_id="j", job_type="pdf", admission=Admission(max_active=5),
                    job=jobs.new_record("j", "pdf", "qrq.pdf", 1))
        wait_until(lambda: worker.listener.heard > heard, timeout=10,
                   message="the notification")
    finally:
        worker.dispose()
        web.dispose()


def test_a_periodic_slot_is_claimed_once(storage):
    """Periodic tasks without a job record claim their minute in the result store:
    the first scheduler gets it, any other (or a late one for an older slot) not."""
    first, second = storage(), storage()
    assert first.claim_slot("alerts.check", "2026-12-03T16:01:00")
    assert not second.claim_slot("alerts.check", "2026-12-03T16:01:00")
    assert not second.claim_slot("alerts.check", "2026-12-03T16:00:00")
    assert second.claim_slot("alerts.check", "2026-12-03T16:02:00")
    assert first.claim_slot("retention.purge", "2026-12-03T16:01:00")  # per task
