"""A consumer's idle workers share one poll schedule (issue 18): 4 idle workers poll the
SQLite queue about as often as 1, still pick a job up, and stop at once when told."""

import fcntl
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from qrq.config import load_settings
from qrq.queue import huey, submit
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


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_workers_waiting_for_a_slow_turn_stop_at_once(settings, tmp_path, consumer, signum):
    # Turns 30 s apart: a worker that slept through its wait would hold the stop for minutes.
    count = tmp_path / "polls"
    worker = consumer(workers=4, args=["-d", "30", "-m", "30"], extra_env={
        "QRQ_TASK_MODULES": "tests.poll_counter", "QRQ_TEST_POLL_LOG": str(count)})
    wait_until(lambda: registered(huey.storage) and polls(count) >= 4,
               message="every worker's first poll")
    worker.proc.send_signal(signum)
    wait_until(lambda: worker.proc.poll() is not None, timeout=15,
               message="the consumer to stop")
    assert "Traceback" not in worker.output()


def test_turns_follow_one_another_an_interval_apart():
    schedule = PollSchedule(10.0, workers=3)
    first = schedule.claim()
    assert schedule.claim() == pytest.approx(first + 10.0)
    assert schedule.claim() == pytest.approx(first + 20.0)
    # Never more than one turn per worker ahead (a dead worker's claim cannot push it away).
    now = time.monotonic()
    assert now + 29.0 < schedule.claim() <= time.monotonic() + 30.0


def test_a_single_worker_polls_every_interval():
    schedule = PollSchedule(10.0, workers=1)
    for _ in range(3):
        now = time.monotonic()
        assert now + 10.0 <= schedule.claim() <= time.monotonic() + 10.0


def test_the_stop_flag_ends_a_wait_for_a_turn():
    stop = threading.Event()
    schedule = PollSchedule(600.0, workers=1, stop=stop)
    waiter = threading.Thread(target=schedule.wait_turn, daemon=True)
    waiter.start()
    stop.set()
    wait_until(lambda: not waiter.is_alive(), message="the wait to end")


def test_a_process_killed_while_claiming_a_turn_blocks_no_one():
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
        claimer = threading.Thread(target=lambda: claimed.append(schedule.claim()), daemon=True)
        claimer.start()
        holder.kill()
        holder.wait()
        wait_until(lambda: claimed, message="the claim after the holder died")
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
