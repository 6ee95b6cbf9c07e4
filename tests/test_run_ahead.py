"""A consumer's worker running short jobs leases a batch and writes their ends in one
commit (qrq/queue/run_ahead.py): every end is written, soon, and none is lost.

The in-process tests drive the worker's calls (dequeue, execute) through the real
storage, as QrqConsumer's workers make them; the last ones run real consumers.
"""

import signal
import threading
import time

import pytest

from qrq.queue import alarm, huey, jobs, run_ahead, submit
from tests import slow_tasks
from tests.conftest import wait_until

SLOW_TASKS = {"QRQ_TASK_MODULES": "tests.slow_tasks"}


def status(job_id):
    return jobs.get(huey.storage, job_id)["status"]


def lease_owners():
    return dict(huey.storage.sql("select job_id, lease_owner from task", results=True))


@pytest.fixture
def worker(settings, monkeypatch):
    """The test's thread acts as a consumer's worker (QrqConsumer sets lease_ahead).
    Batches as long as they can be, and ends that wait until the batch's commit: the
    tests set how long a run takes, not the machine."""
    monkeypatch.setattr(run_ahead, "BATCH_SECONDS", 60.0)
    monkeypatch.setattr(run_ahead, "END_DELAY", 60.0)
    huey.storage.lease_ahead = True
    yield huey
    huey.storage.lease_ahead = False


def run_next(worker):
    task = worker.dequeue()
    assert task is not None
    worker.execute(task)
    return task.id


def test_short_jobs_run_as_a_batch_whose_ends_are_written_together(worker):
    ids = [submit(slow_tasks.noop, owner_id=None) for _ in range(5)]
    assert run_next(worker) == ids[0]
    # The first end is written with the lease of the four rows behind it.
    assert status(ids[0]) == "finished"
    assert lease_owners() == {i: huey.storage.owner for i in ids[1:]}
    assert [status(i) for i in ids[1:]] == ["running"] * 4
    # The batch's ends wait for its last run, whose commit writes them all.
    for expected in ids[1:4]:
        assert run_next(worker) == expected
    assert [status(i) for i in ids[1:4]] == ["running"] * 3
    ran_by = time.time()
    assert run_next(worker) == ids[4]
    records = [jobs.get(huey.storage, i) for i in ids]
    assert [(r["status"], r["attempts"], r["progress"]) for r in records] == \
        [("finished", 1, 100)] * 5
    # Each end is dated when the run ended, not when it was written.
    assert all(r["finished_at"] <= ran_by for r in records[1:4])
    assert records[4]["finished_at"] > ran_by
    assert lease_owners() == {}
    assert worker.dequeue() is None


def test_a_batch_that_ends_in_time_never_wakes_the_flusher(worker, monkeypatch):
    """The flusher sleeps on an alarm that a batch sets when it starts waiting and clears
    when its last run ends: while batches end in time it looks at none of them."""
    looked = []
    overdue = huey.storage._overdue
    monkeypatch.setattr(huey.storage, "_overdue",
                        lambda now: (looked.append(now), overdue(now))[1])
    first = [submit(slow_tasks.noop, owner_id=None) for _ in range(3)]
    assert [run_next(worker) for _ in first] == first  # the flusher starts
    wait_until(lambda: looked, message="the flusher's first look")
    began = time.monotonic()
    second = [submit(slow_tasks.noop, owner_id=None) for _ in range(3)]
    assert [run_next(worker) for _ in second] == second  # leased by one poll
    assert [status(i) for i in first + second] == ["finished"] * 6
    ended = time.monotonic()
    huey.storage._alarm.wake()
    wait_until(lambda: looked[-1] > ended, message="the look it was woken for")
    assert not [t for t in looked if began <= t <= ended]


def test_a_poll_after_a_short_run_leases_what_it_finds_as_one_batch(worker, monkeypatch):
    """The jobs one poll finds take one commit to lease: a worker whose last run was short
    (and recent) leases them all as it takes the first, as its completion would; before
    any run, or longer than RECENT after the last, it takes one."""
    first = [submit(slow_tasks.noop, owner_id=None) for _ in range(2)]
    task = worker.dequeue()
    assert lease_owners() == {first[0]: huey.storage.owner, first[1]: None}
    worker.execute(task)
    assert run_next(worker) == first[1]  # leased by that completion
    assert worker.dequeue() is None
    found = [submit(slow_tasks.noop, owner_id=None) for _ in range(3)]
    task = worker.dequeue()
    assert task.id == found[0]
    assert lease_owners() == dict.fromkeys(found, huey.storage.owner)
    worker.execute(task)
    assert [run_next(worker) for _ in found[1:]] == found[1:]
    assert [status(i) for i in found] == ["finished"] * 3
    assert lease_owners() == {}
    monkeypatch.setattr(run_ahead, "RECENT", 0.0)  # the last run is long past
    later = [submit(slow_tasks.noop, owner_id=None) for _ in range(2)]
    assert worker.dequeue().id == later[0]
    assert lease_owners() == {later[0]: huey.storage.owner, later[1]: None}


def test_a_batch_writes_every_end_but_one_whose_lease_was_lost(worker, caplog):
    """The batch's ends are written together (on PostgreSQL in one round trip); each is
    fenced on its own lease, so an end whose row another consumer took is dropped."""
    batch_with_a_lost_lease(worker, caplog)


@pytest.mark.postgres_only("psycopg's pipeline mode")
def test_without_pipeline_mode_a_batch_still_writes_each_end(worker, monkeypatch, caplog):
    # libpq before 14 has no pipeline mode. psycopg's wheel bundles a newer one, so an
    # older libpq is simulated: psycopg then sends the batch's ends one at a time.
    import psycopg

    monkeypatch.setattr(psycopg.Pipeline, "is_supported", classmethod(lambda cls: False))
    batch_with_a_lost_lease(worker, caplog)


def batch_with_a_lost_lease(worker, caplog):
    ids = [submit(slow_tasks.noop, owner_id=None) for _ in range(4)]
    for expected in ids[:3]:
        assert run_next(worker) == expected  # the ends of ids[1] and ids[2] wait
    huey.storage.sql("update task set lease_owner = 'another consumer' where job_id = ?",
                     (ids[1],), commit=True)
    assert run_next(worker) == ids[3]  # the batch's commit
    assert [status(i) for i in ids] == ["finished", "running", "finished", "finished"]
    assert f"job {ids[1]}: this run lost its lease" in caplog.text
    assert lease_owners() == {ids[1]: "another consumer"}


@pytest.mark.parametrize("alarm_kind", ["timerfd", "event"])
def test_a_long_run_in_a_batch_lets_the_ends_before_it_and_the_rows_after_it_go(
        worker, monkeypatch, alarm_kind):
    """Within END_DELAY of a long run's start, the ends that waited are written and the
    rows leased behind it are given back, so they run elsewhere; with the flusher's
    alarm on Linux's timerfd, and on the Event used elsewhere (timerfd hidden)."""
    if alarm_kind == "event":
        monkeypatch.setattr(alarm, "_LIBC", None)
    monkeypatch.setattr(run_ahead, "END_DELAY", 0.5)
    monkeypatch.setattr(huey.storage, "caps", {})  # the long job's type is capped
    fast, waited = (submit(slow_tasks.noop, owner_id=None, priority=5) for _ in range(2))
    long = submit(slow_tasks.steps, 60, 0.05, owner_id=None, priority=5)  # 3 s
    behind = submit(slow_tasks.noop, owner_id=None, priority=5)
    assert run_next(worker) == fast
    assert set(lease_owners()) == {waited, long, behind}
    assert run_next(worker) == waited
    assert status(waited) == "running"  # its end waits for the batch's commit
    seen = {}

    def watch():  # another process's view, while the long run goes on
        wait_until(lambda: status(waited) == "finished" and lease_owners().get(behind, 1)
                   is None, timeout=10, interval=0.005, message="the batch to be let go")
        seen.update(long=status(long), behind=jobs.get(huey.storage, behind))

    watcher = threading.Thread(target=watch)
    watcher.start()
    assert run_next(worker) == long
    watcher.join()
    assert seen["long"] == "running"
    assert (seen["behind"]["status"], seen["behind"]["attempts"]) == ("queued", 0)
    assert [status(i) for i in (fast, waited, long)] == ["finished"] * 3
    assert run_next(worker) == behind  # leased again, by the long run's completion
    assert status(behind) == "finished"
    assert (huey.storage._alarm._timer is None) == (alarm_kind == "event")


def test_a_stopping_worker_writes_its_batch_and_gives_back_the_rest(worker):
    ids = [submit(slow_tasks.noop, owner_id=None) for _ in range(4)]
    run_next(worker)
    run_next(worker)
    assert status(ids[1]) == "running"
    huey.storage.give_back_ahead()  # huey's shutdown hook in a stopping worker
    records = [jobs.get(huey.storage, i) for i in ids]
    assert [(r["status"], r["attempts"]) for r in records] == [
        ("finished", 1), ("finished", 1), ("queued", 0), ("queued", 0)]
    assert lease_owners() == {ids[2]: None, ids[3]: None}


def test_ends_a_dead_worker_never_wrote_run_again(worker, consumer):
    """A worker that dies holding ends it has not written (kill -9 between two runs of
    a batch) loses no job: their leases lapse and another consumer runs them again."""
    ids = [submit(slow_tasks.noop, owner_id=None) for _ in range(4)]
    run_next(worker)
    run_next(worker)  # ran, its end unwritten
    huey.storage.stop_heartbeat()  # this "process" dies: nothing more of it is written
    huey.storage._new_owner()  # and what comes next starts from nothing
    assert [status(i) for i in ids] == ["finished", "running", "running", "running"]
    consumer(workers=1, extra_env=SLOW_TASKS)
    wait_until(lambda: all(status(i) == "finished" for i in ids), timeout=60,
               message="every job to finish")
    assert [jobs.get(huey.storage, i)["attempts"] for i in ids] == [1, 2, 2, 2]


@pytest.mark.slow
def test_a_consumer_killed_while_draining_short_jobs_loses_none(settings, consumer):
    ids = [submit(slow_tasks.noop, owner_id=None) for _ in range(600)]
    worker = consumer(workers=2, extra_env=SLOW_TASKS)
    wait_until(lambda: huey.storage.sql("select count(*) from job where status = 'finished'",
                                        results=True)[0][0] >= 100,
               timeout=60, message="a part of the burst to finish")
    worker.kill(signal.SIGKILL)
    consumer(workers=2, extra_env=SLOW_TASKS)
    wait_until(lambda: huey.storage.sql("select count(*) from job where status = 'finished'",
                                        results=True)[0][0] == len(ids),
               timeout=120, message="every job to finish")
    assert huey.storage.sql("select count(*) from task", results=True)[0][0] == 0


def test_the_batch_holds_about_batch_seconds_of_runs():
    assert run_ahead.batch_size(0.00005) == run_ahead.BATCH_MAX
    assert run_ahead.batch_size(0.002) == 5
    assert run_ahead.batch_size(0.5) == 1


def test_a_batch_keeps_the_line_order_around_a_capped_job(worker):
    ids = [submit(slow_tasks.noop, owner_id=None, priority=5) for _ in range(2)]
    ids.append(submit(slow_tasks.steps, 1, 0.01, owner_id=None, priority=5))  # capped type
    ids.append(submit(slow_tasks.noop, owner_id=None, priority=5))
    assert [run_next(worker) for _ in ids] == ids
    assert [status(i) for i in ids] == ["finished"] * 4
