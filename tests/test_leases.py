"""The rows a process holds (renewed by its heartbeat) and the retried write of a run's
end while the queue database is away (qrq/queue/leases.py)."""

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from qrq.errors import Unavailable
from qrq.queue import huey, jobs, submit
from qrq.queue.leases import HeldRows
from tasks.mail import send_mail_task
from tests.relay import Relay


def test_a_row_held_twice_stays_held_until_both_let_go():
    # One worker thread gave the row back; another leased it again before the first
    # let go of it: the second's run must still be renewed.
    held = HeldRows()
    held.hold(7, lapses=100.0)
    held.hold(7, lapses=130.0)
    held.let_go([7])
    assert held.rows() == [7] and held.lapses_at([7]) == 130.0
    held.let_go([7])
    assert held.rows() == [] and held.lapses_at([7]) == 0.0


def test_a_renewal_pushes_back_when_the_held_rows_lapse():
    held = HeldRows()
    held.hold(1, lapses=100.0)
    held.hold(2, lapses=110.0)
    held.renewed([1, 2, 3], lapses=140.0)  # 3: let go meanwhile, not held again
    assert held.rows() == [1, 2] and held.lapses_at([1, 2]) == 140.0


def test_the_end_of_a_run_is_tried_again_while_its_lease_holds(settings):
    submit(send_mail_task, ["ops@example.com"], "end", "later", owner_id=None)
    storage = huey.storage
    assert storage.dequeue() is not None
    row = storage._local.row
    tries = []

    def away_twice():
        tries.append(time.monotonic())
        if len(tries) < 3:
            raise Unavailable("the queue database is away")
        return "written"

    assert storage._ending([row], away_twice) == "written" and len(tries) == 3
    assert storage._held.rows() == []  # let go once written


def test_it_gives_up_before_the_lease_lapses(settings):
    # Past the lapse, another worker of this process (the same lease owner) may lease
    # the row again; a retried write would end that run, not this one. (No heartbeat
    # runs here, as none renews during an outage.)
    storage = huey.storage
    lapses = time.monotonic() + 1.0  # a lease of 3 s renewed 2 s ago
    storage._held.hold(41, lapses)
    tries = []

    def away():
        tries.append(time.monotonic())
        raise Unavailable("the queue database is away")

    with pytest.raises(Unavailable):
        storage._ending([41], away)
    assert len(tries) > 1 and tries[-1] < lapses  # tried again, and stopped in time
    assert storage._held.rows() == []  # let go: its lease lapses, the job runs again


@pytest.fixture
def relay(backend, pg_url, monkeypatch):
    """The test's qrq reaches its PostgreSQL server through a :class:`Relay`."""
    relay = Relay(pg_url)
    monkeypatch.setenv("QRQ_DATABASE_URL", relay.url)
    yield relay
    relay.close()


@pytest.mark.postgres_only("a commit whose answer the network lost: SQLite's commit is local")
@pytest.mark.parametrize("outcome", [{"status": "finished", "result": {"sent": 1}},
                                     {"status": "failed", "error": "the SMTP server said no"}],
                         ids=["finished", "failed"])
def test_a_commit_whose_answer_was_lost_ends_the_run_once(relay, settings, outcome, caplog):
    # The end's first try committed, but the connection dropped before its answer came
    # back; the try again finds the row gone. That is this run's own end, not a lost
    # lease: the job is returned as ended (its end hooks run) and nothing says "lost".
    # (A first run that finished is PostgreSQL's one-statement end; a failure, the
    # generic one.)
    job_id = submit(send_mail_task, ["ops@example.com"], "end", "once", owner_id=None)
    storage = huey.storage
    assert storage.dequeue() is not None
    relay.lose_commit_answer(after=b"delete from task")
    ended = storage.complete(job_id, outcome)
    assert relay.lost.is_set()
    assert [(job.id, job.status) for job in ended] == [(job_id, outcome["status"])]
    assert "lost its lease" not in caplog.text
    assert "written after all" in caplog.text
    job = jobs.get(storage, job_id)
    assert (job["status"], job["attempts"]) == (outcome["status"], 1)
    assert storage.sql("select count(*) from task", results=True) == [(0,)]


# -- a run's lease is its own, not its process's ---------------------------------------
# A process's worker threads share its lease owner id. When a run's lease lapses (the
# process stalled, or its heartbeat could not reach the database: forced here, where the
# heartbeat would renew it), another of those threads may lease the row again; the
# first run's end must then not be taken for, or overwrite, the second's.

def _thread():
    """A worker thread of this process: the storage keeps each thread's lease apart."""
    return ThreadPoolExecutor(max_workers=1)


def _take_over(storage, sibling) -> None:
    """The leased row's lease lapses and *sibling* leases it again (the heartbeat may
    renew the lease between the two: then lapse it again)."""
    deadline = time.monotonic() + 10
    while True:
        storage.sql("update task set lease_until = 0", commit=True)
        if sibling.submit(storage.dequeue).result() is not None:
            return
        assert time.monotonic() < deadline, "the sibling never leased the row"


def test_a_run_whose_lease_a_sibling_thread_took_over_writes_nothing(settings, caplog):
    job_id = submit(send_mail_task, ["ops@example.com"], "end", "twice", owner_id=None)
    storage = huey.storage
    with _thread() as first, _thread() as sibling:
        assert first.submit(storage.dequeue).result() is not None
        _take_over(storage, sibling)
        stale = first.submit(storage.complete, job_id, {"status": "failed", "error": "late"})
        assert stale.result() == []  # nothing ended: no end hooks run for it
        assert "lost its lease" in caplog.text
        job = jobs.get(storage, job_id)
        assert (job["status"], job["attempts"]) == ("running", 2)
        assert storage.sql("select count(*) from task where lease_owner is not null",
                           results=True) == [(1,)]  # the sibling's lease stands
        done = sibling.submit(storage.complete, job_id, {"status": "finished",
                                                         "result": {"sent": 1}})
        assert [(job.id, job.status) for job in done.result()] == [(job_id, "finished")]
    assert jobs.get(storage, job_id)["status"] == "finished"
    assert storage.sql("select count(*) from task", results=True) == [(0,)]


@pytest.mark.postgres_only("a connection lost mid-write: SQLite's writes are local")
@pytest.mark.parametrize("outcome", [{"status": "finished", "result": {"sent": 1}},
                                     {"status": "failed", "error": "the SMTP server said no"}],
                         ids=["finished", "failed"])
def test_a_retried_end_does_not_take_a_sibling_threads_end_for_its_own(relay, settings,
                                                                       outcome, caplog):
    # The first run's lease lapsed; a sibling thread leased the row again and ended the
    # job the same way. The first run's end then fails with the connection and is tried
    # again (its row is still held: the sibling's hold keeps it), and finds the row gone
    # and the job ended by this process: the sibling's end, not its own.
    job_id = submit(send_mail_task, ["ops@example.com"], "end", "twice", owner_id=None)
    storage = huey.storage
    with _thread() as first, _thread() as sibling:
        assert first.submit(storage.dequeue).result() is not None
        _take_over(storage, sibling)
        ended = sibling.submit(storage.complete, job_id, outcome).result()
        assert [(job.id, job.status) for job in ended] == [(job_id, outcome["status"])]
        relay.drop_statement(b"delete from task")
        stale = first.submit(storage.complete, job_id, outcome).result()
    assert relay.lost.is_set() and "could not be written" in caplog.text  # tried again
    assert stale == []  # the end hooks ran once, for the sibling's end
    assert "lost its lease" in caplog.text
    job = jobs.get(storage, job_id)
    assert (job["status"], job["attempts"]) == (outcome["status"], 2)


@pytest.mark.postgres_only("a connection lost mid-write: SQLite's writes are local")
def test_a_give_back_is_not_tried_again(relay, settings, caplog):
    # Giving a run back lowers the job's count of attempts, so a sibling thread that
    # leased the row after a first try that committed (its answer lost) runs under the
    # same number: a try again could give back that run. The lease lapses instead.
    job_id = submit(send_mail_task, ["ops@example.com"], "end", "back", owner_id=None)
    storage = huey.storage
    assert storage.dequeue() is not None
    relay.drop_statement(b"update task set lease_until = null")
    storage.release(job_id)
    assert relay.lost.is_set() and "could not be written" in caplog.text
    job = jobs.get(storage, job_id)
    assert (job["status"], job["attempts"]) == ("running", 1)  # not given back
    assert storage.sql("select count(*) from task where lease_owner is not null",
                       results=True) == [(1,)]
    assert storage._held.rows() == []  # let go: its lease lapses, the job runs again
