"""A consumer's idle workers share one poll schedule (issue 18): 4 idle workers poll the
SQLite queue about as often as 1, still pick a job up, and stop at once when told; the
lead runs the jobs that trickle in, and a burst wakes the others at once."""

import collections
import fcntl
import os
import signal
import subprocess
import sys
import threading

import pytest

from qrq.config import load_settings
from qrq.queue import huey, poll_schedule, submit
from qrq.queue.poll_schedule import PollSchedule
from tests import slow_tasks
from tests.conftest import Consumer, wait_until

pytestmark = pytest.mark.slow


def polls(path) -> int:
    try:
        return os.path.getsize(path)
    except FileNotFoundError:
        return 0


def registered(storage) -> bool:
    return bool(storage.sql("select id from consumer", results=True))


@pytest.mark.sqlite_only("SQLite's idle workers poll; PostgreSQL's wait for a NOTIFY")
@pytest.mark.parametrize("kind", ["process", "thread"])
def test_four_idle_workers_poll_about_as_often_as_one(settings, tmp_path, consumer, kind):
    # Two consumers idle side by side, -w 4 on the test's queue and -w 1 on another, so
    # both meet the same load; each worker's dequeues are counted into a file.
    counts = {4: tmp_path / "polls-4", 1: tmp_path / "polls-1"}
    four = consumer(workers=4, args=["-k", kind], extra_env={
        "QRQ_TASK_MODULES": "tests.slow_tasks,tests.poll_counter",
        "QRQ_TEST_POLL_LOG": str(counts[4])})
    other = load_settings(data_dir=str(tmp_path / "one"), lease_seconds=3.0)
    other.ensure_dirs()
    one = Consumer(other, workers=1, args=["-k", kind], extra_env={
        "QRQ_TASK_MODULES": "tests.poll_counter",
        "QRQ_TEST_POLL_LOG": str(counts[1])}).start()
    try:
        wait_until(lambda: registered(huey.storage) and polls(counts[4]) >= 4
                   and polls(counts[1]) >= 1, message="both consumers to poll")
        start = {n: polls(path) for n, path in counts.items()}
        # The window: while the single worker polls 100 times.
        wait_until(lambda: polls(counts[1]) - start[1] >= 100, timeout=60,
                   message="100 polls of the single worker")
        seen = {n: polls(path) - start[n] for n, path in counts.items()}
    finally:
        one.stop()
    # Each polling on its own, 4 workers poll 4 times as often as 1.
    assert seen[4] <= 2 * seen[1], seen

    # A job enqueued while all 4 are idle is picked up at the next turn.
    job_id = submit(slow_tasks.noop, owner_id=None)
    wait_until(lambda: huey.storage.sql("select status from job where id = ?", (job_id,),
                                        results=True)[0][0] == "finished",
               message="the job to run")
    assert "Traceback" not in four.output() + one.output()


def job_rows(ids: list[str], columns: str) -> list[tuple]:
    return huey.storage.sql(f"select {columns} from job where id in "
                            f"({','.join('?' * len(ids))})", ids, results=True)


@pytest.mark.sqlite_only("SQLite's idle workers poll; PostgreSQL's wait for a NOTIFY")
def test_jobs_that_trickle_in_run_in_the_lead(settings, consumer):
    # One job at a time, each enqueued once the last has finished: taking turns, four
    # workers would run about a quarter each (the job goes to whoever polls next).
    consumer(workers=4, args=["-d", "0.05", "-m", "0.05"],
             extra_env={"QRQ_TASK_MODULES": "tests.slow_tasks"})
    wait_until(lambda: registered(huey.storage), message="the consumer to start")
    jobs = []
    for _ in range(24):
        jobs.append(submit(slow_tasks.noop, owner_id=None))
        wait_until(lambda: job_rows(jobs[-1:], "status")[0][0] == "finished",
                   message="the job to run")
    workers = collections.Counter(worker for worker, in job_rows(jobs, "worker"))
    assert sum(workers.values()) == len(jobs)
    # A loaded machine may make the lead late now and then, and another worker leads.
    assert workers.most_common(1)[0][1] >= len(jobs) * 2 // 3, workers


@pytest.mark.sqlite_only("SQLite's idle workers poll; PostgreSQL's wait for a NOTIFY")
def test_a_burst_wakes_the_parked_workers_at_once(settings, tmp_path, consumer):
    # The lead polls every 2 s and hands the lead over after a 2 s run; jobs run 3 s. So
    # only the burst's wake-ups (a poll that leased all it asked for wakes the next
    # worker) start all four jobs before the first one ends.
    count = tmp_path / "polls"
    burst = consumer(workers=4, args=["-d", "2", "-m", "2"], extra_env={
        "QRQ_TASK_MODULES": "tests.slow_tasks,tests.poll_counter",
        "QRQ_TEST_POLL_LOG": str(count), "QRQ_TYPE_CAPS": "batch=4", "QRQ_LONG_JOB_CAP": "4"})
    wait_until(lambda: registered(huey.storage) and polls(count) >= 4,
               message="every worker's first poll")
    jobs = [submit(slow_tasks.long_batch, 10, 0.3, owner_id=None) for _ in range(4)]
    wait_until(lambda: all(status == "finished" for status, in job_rows(jobs, "status")),
               timeout=60, message="the jobs to run")
    rows = job_rows(jobs, "worker, started_at, finished_at")
    assert len({worker for worker, _, _ in rows}) == 4, rows
    assert max(started for _, started, _ in rows) < min(finished for _, _, finished in rows)
    assert "Traceback" not in burst.output()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_workers_waiting_for_a_slow_turn_stop_at_once(settings, tmp_path, consumer, signum):
    # Polls 30 s apart (on PostgreSQL 10 minutes): a worker that slept through its wait
    # would hold the stop for that long.
    count = tmp_path / "polls"
    worker = consumer(workers=4, args=["-d", "30", "-m", "30"], extra_env={
        "QRQ_TASK_MODULES": "tests.poll_counter,tests.slow_idle_poll",
        "QRQ_TEST_POLL_LOG": str(count)})
    wait_until(lambda: registered(huey.storage) and polls(count) >= 4,
               message="every worker's first poll")
    worker.proc.send_signal(signum)
    wait_until(lambda: worker.proc.poll() is not None, timeout=15,
               message="the consumer to stop")
    assert "Traceback" not in worker.output()


def in_thread(function, *args):
    """*function*'s result, called from a new thread: another worker than the test's
    thread (a worker's identity in the schedule is its thread)."""
    result = []
    thread = threading.Thread(target=lambda: result.append(function(*args)))
    thread.start()
    thread.join()
    return result[0]


def parked(schedule: PollSchedule) -> threading.Thread:
    """A worker thread in wait_to_poll (parked, when another worker leads)."""
    waiter = threading.Thread(target=schedule.wait_to_poll, daemon=True)
    waiter.start()
    return waiter


def test_one_worker_leads_and_a_late_lead_is_replaced():
    schedule = PollSchedule(0.05, workers=3)
    assert schedule.lead()  # no lead yet: this thread takes it
    assert schedule.lead()  # and keeps it
    assert not in_thread(schedule.lead)  # another worker parks while the lead is on time
    # A lead more than an interval late (dead, or busy) is replaced by the next to look.
    wait_until(lambda: in_thread(schedule.lead), message="the late lead to be replaced")
    assert not schedule.lead()


def test_a_single_worker_always_leads():
    schedule = PollSchedule(10.0, workers=1)
    for _ in range(3):
        assert schedule.lead()


def test_a_poll_that_leased_all_it_asked_for_wakes_a_parked_worker(monkeypatch):
    monkeypatch.setattr(poll_schedule, "PARKED_WAIT", 600.0)  # only a wake ends the wait
    schedule = PollSchedule(600.0, workers=2)
    assert schedule.lead()
    waiter = parked(schedule)
    schedule.found_work(all_asked=False)  # fewer rows than asked: nothing else waits
    schedule.found_work(all_asked=True)  # a burst: the parked worker helps
    wait_until(lambda: not waiter.is_alive(), message="the parked worker to wake")
    assert schedule.lead()  # it helped; the lead stays


def test_a_long_run_of_the_lead_hands_the_lead_over(monkeypatch):
    monkeypatch.setattr(poll_schedule, "PARKED_WAIT", 600.0)  # only a wake ends the wait
    schedule = PollSchedule(0.2, workers=2)
    # The lead's poll finds a job that runs on past an interval.
    in_thread(lambda: (schedule.lead(), schedule.found_work(all_asked=False)))
    waiter = parked(schedule)
    wait_until(lambda: not waiter.is_alive(), message="the lead to be handed over")
    assert not in_thread(schedule.lead)  # the parked worker leads now


def test_a_lead_whose_run_ends_in_time_keeps_the_lead(monkeypatch):
    monkeypatch.setattr(poll_schedule, "PARKED_WAIT", 600.0)  # only a wake ends the wait
    stop = threading.Event()
    schedule = PollSchedule(0.2, workers=2, stop=stop)
    assert schedule.lead()  # this thread leads
    waiter = parked(schedule)
    schedule.found_work(all_asked=False)  # the hand-over is due in 0.2 s...
    schedule.wait_to_poll()  # ...but the run ended: the next poll, 0.2 s later
    schedule.wait_to_poll()  # and the one after, past the hand-over it cleared
    assert schedule.lead()
    assert waiter.is_alive()  # never woken
    stop.set()
    schedule.stop_waiting()
    wait_until(lambda: not waiter.is_alive(), message="the parked worker to stop")


def test_a_hand_over_after_the_lead_renewed_its_claim_leaves_the_lead_alone():
    # The hand-over thread gives up the claim the lead held when its run began; a lead
    # that ended that run and claimed its next poll in between keeps the lead.
    schedule = PollSchedule(600.0, workers=2)
    assert schedule.lead()
    claim = poll_schedule._LEAD.unpack_from(schedule._shared)
    assert schedule.lead()  # its next poll: a new claim
    schedule._release(*claim)
    assert not in_thread(schedule.lead)


def test_the_stop_flag_ends_the_leads_wait_and_the_parked_ones(monkeypatch):
    monkeypatch.setattr(poll_schedule, "PARKED_WAIT", 600.0)  # only a wake ends the wait
    stop = threading.Event()
    schedule = PollSchedule(600.0, workers=3, stop=stop)
    waiters = [parked(schedule)]
    wait_until(lambda: not in_thread(schedule.lead), message="the first worker to lead")
    waiters += [parked(schedule), parked(schedule)]
    stop.set()
    schedule.stop_waiting()
    wait_until(lambda: not any(waiter.is_alive() for waiter in waiters),
               message="the waits to end")


def test_a_process_killed_while_taking_the_lead_blocks_no_one():
    schedule = PollSchedule(0.01, workers=2)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, sys, time\n"
         f"fcntl.lockf({schedule._lock.fd}, fcntl.LOCK_EX)\n"
         "print('locked', flush=True)\ntime.sleep(600)\n"],
        pass_fds=[schedule._lock.fd], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        with pytest.raises(OSError):  # held by the other process
            fcntl.lockf(schedule._lock.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        claimed = []
        claimer = threading.Thread(target=lambda: claimed.append(schedule.lead()), daemon=True)
        claimer.start()
        holder.kill()
        holder.wait()
        wait_until(lambda: claimed, message="the claim after the holder died")
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
