"""The rows a process holds (renewed by its heartbeat) and the retried write of a run's
end while the queue database is away (qrq/queue/leases.py)."""

import time

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
