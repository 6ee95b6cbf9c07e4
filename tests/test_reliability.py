"""What only shows across processes: crashes, time limits, shutdown, load, starvation.

Each test runs a real ``huey_consumer huey_app.huey`` subprocess (process workers)
on the test's data directory, with leases of 3 seconds so recovery is quick.
"""

import contextlib
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from qrq.config import load_settings
from qrq.errors import StorageFull, Unavailable
from qrq.queue import huey, jobs, submit
from tests import slow_tasks
from tests.clusters import Cluster
from tests.conftest import Consumer, wait_until

pytestmark = pytest.mark.slow
SLOW_TASKS = {"QRQ_TASK_MODULES": "tests.slow_tasks"}


def job(job_id):
    return jobs.get(huey.storage, job_id)


def statuses(ids):
    return [job(i)["status"] for i in ids]


def test_sigkill_mid_run_loses_no_job(consumer):
    ids = [submit(slow_tasks.steps, 10, 0.15, owner_id=None) for _ in range(6)]
    worker = consumer(workers=2, extra_env=SLOW_TASKS)
    for _ in range(3):
        # Kill the whole consumer (main process and workers) while one of *its*
        # jobs is mid-run (a lease owner starts with the consumer's host:pid).
        mine = f":{worker.proc.pid}:"
        wait_until(lambda mine=mine: any(
            (j := job(i))["status"] == "running" and j["progress"] > 0
            and mine in (j["worker"] or "") for i in ids), timeout=60, message="a job mid-run")
        worker.kill(signal.SIGKILL)
        worker = consumer(workers=2, extra_env=SLOW_TASKS)
    wait_until(lambda: all(s == "finished" for s in statuses(ids)), timeout=120,
               message="every job to finish")
    records = [job(i) for i in ids]
    assert all(r["status"] == "finished" and r["progress"] == 100 for r in records)
    assert sum(r["attempts"] for r in records) >= len(ids) + 3  # three killed runs re-ran
    assert max(r["attempts"] for r in records) >= 2
    assert huey.storage.sql("select count(*) from task", results=True)[0][0] == 0


def test_time_limit_stops_python_code_and_sqlite_queries(consumer):
    consumer(workers=1, extra_env=SLOW_TASKS)
    spinning = submit(slow_tasks.spin, owner_id=None, timeout=1)  # per-call limit
    querying = submit(slow_tasks.long_query, owner_id=None, timeout=1)
    after = submit(slow_tasks.steps, 2, 0.01, owner_id=None)
    wait_until(lambda: job(after)["status"] == "finished", timeout=60,
               message="the job queued behind the stuck ones")
    for job_id in (spinning, querying):
        record = job(job_id)
        assert (record["status"], record["error"], record["attempts"]) == (
            "failed", "timeout", 1)


def test_sigterm_gives_running_jobs_back_then_they_finish(consumer):
    job_id = submit(slow_tasks.steps, 40, 0.1, owner_id=None)
    worker = consumer(workers=1, extra_env=SLOW_TASKS, args=["-t", "0.5"])
    wait_until(lambda: job(job_id)["progress"] > 0, timeout=60, message="the job to run")
    worker.proc.send_signal(signal.SIGTERM)  # what systemd sends (to the main process)
    worker.proc.wait(timeout=30)
    released = job(job_id)
    assert (released["status"], released["attempts"]) == ("queued", 0), (
        released, worker.output()[-3000:])
    assert (released["progress"], released["stage"]) == (0, "")  # starts over
    assert huey.storage.queue_size() == 1  # lease given back: runnable at once
    consumer(workers=1, extra_env=SLOW_TASKS)
    wait_until(lambda: job(job_id)["status"] == "finished", timeout=60)
    assert job(job_id)["attempts"] == 1
    assert "Traceback" not in worker.output()


def test_cancel_a_running_job_stops_it_at_its_next_progress_call(consumer):
    job_id = submit(slow_tasks.steps, 200, 0.05, owner_id=None)
    worker = consumer(workers=1, extra_env=SLOW_TASKS)
    wait_until(lambda: job(job_id)["progress"] > 0, timeout=60)
    assert huey.cancel(job_id) == "running"
    wait_until(lambda: job(job_id)["status"] == "canceled", timeout=30)
    assert job(job_id)["progress"] < 100
    # A cancel is not an error: one line in the log, no traceback.
    wait_until(lambda: "CancelExecution" in worker.output(), timeout=30)
    assert "Traceback" not in worker.output()
    about_it = [line for line in worker.output().splitlines()
                if job_id in line and "Executing" not in line]
    assert len(about_it) == 1 and "will not be retried" in about_it[0], about_it


def test_interactive_work_starts_while_long_jobs_fill_their_caps(settings, consumer):
    env = {**SLOW_TASKS, "QRQ_TYPE_CAPS": "batch=2,analytics=2", "QRQ_LONG_JOB_CAP": "2"}
    long_ids = ([submit(slow_tasks.long_batch, 600, 0.05, owner_id=None) for _ in range(3)]
                + [submit(slow_tasks.long_analytics, 600, 0.05, owner_id=None)
                   for _ in range(3)])
    consumer(workers=3, extra_env=env)
    wait_until(lambda: statuses(long_ids).count("running") == 2, timeout=60,
               message="two long jobs running")
    quick = submit(slow_tasks.steps, 1, 0.0, owner_id=None)
    wait_until(lambda: job(quick)["status"] == "finished", timeout=30,
               message="the quick job while long ones run")
    # It ran beside the long jobs, not after them: they are all still going.
    assert statuses(long_ids).count("running") == 2
    assert "finished" not in statuses(long_ids)
    for job_id in long_ids:
        huey.cancel(job_id)
    wait_until(lambda: all(s == "canceled" for s in statuses(long_ids)), timeout=60)


def most_at_once(intervals) -> int:
    """The most of *intervals* ((start, end) pairs) that overlap at any moment."""
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = most = 0
    for _, step in edges:
        running += step
        most = max(most, running)
    return most


def test_caps_hold_across_consumers(settings, consumer):
    """Two consumers of four workers each, a cap of 2 on batch jobs: never more than
    two batch jobs run at once (SKIP LOCKED alone let a naive port run 7)."""
    huey.storage.sql("create table run_log (job_id text primary key, "
                     "started double precision, ended double precision)", commit=True)
    ids = [submit(slow_tasks.logged_batch, 0.3, owner_id=None) for _ in range(16)]
    env = {**SLOW_TASKS, "QRQ_TYPE_CAPS": "batch=2", "QRQ_LONG_JOB_CAP": "8"}
    consumer(workers=4, extra_env=env)
    consumer(workers=4, extra_env=env)
    wait_until(lambda: all(s == "finished" for s in statuses(ids)), timeout=120,
               message="every batch job to finish")
    runs = huey.storage.sql("select started, ended from run_log", results=True)
    assert len(runs) == len(ids)
    assert most_at_once(runs) == 2


def test_periodic_tasks_run_once_per_slot_when_every_consumer_schedules(settings, consumer):
    """Two consumers, both running the scheduler (no -n): each minute's periodic run
    is one job, enqueued by whichever scheduler comes first."""
    wait_until(lambda: time.gmtime().tm_sec < 25, timeout=40, message="a minute's start")
    minute = time.gmtime().tm_min
    first = consumer(workers=1, extra_env=SLOW_TASKS, periodic=True)
    second = consumer(workers=1, extra_env=SLOW_TASKS, periodic=True)
    checked = "Enqueueing periodic task qrq.test.every_minute"
    wait_until(lambda: checked in first.output() and checked in second.output(), timeout=30,
               message="both schedulers to enqueue the periodic task")
    assert time.gmtime().tm_min == minute, "the test straddled a minute; rerun it"

    def runs():
        return huey.storage.sql("select id, status from job where name = ?",
                                ("test.every_minute",), results=True)

    wait_until(lambda: [status for _, status in runs()] == ["finished"], timeout=60,
               message="the one periodic run to finish")
    assert len(runs()) == 1


def test_no_lock_errors_or_5xx_under_concurrent_enqueue(app, templates, alice, consumer):
    worker = consumer(workers=4)
    codes, ids, lock = [], [], threading.Lock()

    def client_thread():
        client = app.test_client()
        for _ in range(15):
            response = client.post("/api/generate-qr-pdf", headers=alice[1],
                                   json={"template_id": 4, "options": {"copies": 2}})
            status = client.get(response.get_json().get("status_url", "/api/nope"),
                                headers=alice[1])
            with lock:
                codes.extend([response.status_code, status.status_code])
                ids.append(response.get_json().get("job_id"))

    threads = [threading.Thread(target=client_thread) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(set(codes)) == [200, 202] and len(ids) == 120
    wait_until(lambda: all(s == "finished" for s in statuses(ids)), timeout=120,
               message="all 120 jobs to finish")
    assert "database is locked" not in worker.output()
    assert "Traceback" not in worker.output()


def test_consumer_registers_and_deregisters(consumer):
    worker = consumer(workers=2)
    rows = wait_until(lambda: huey.storage.sql("select pid, workers from consumer",
                                               results=True), timeout=30)
    assert rows == [(worker.proc.pid, 2)]
    worker.stop()
    assert huey.storage.sql("select count(*) from consumer", results=True)[0][0] == 0
    assert os.environ  # the fixture's stop() already waited for a clean exit


def test_a_killed_worker_process_is_replaced_and_its_job_runs_again(consumer):
    """The OOM killer takes one worker: huey forks a replacement (which must not
    share the parent's SQLite connection) and the lost run is leased again."""
    # 6 s of steps, so that the kill lands mid-run even when a loaded machine is slow to
    # see the first progress (with 2 s, one loaded local run failed; its cause was not
    # kept).
    job_id = submit(slow_tasks.steps, 60, 0.1, owner_id=None)
    worker = consumer(workers=1, extra_env=SLOW_TASKS, args=["-c", "1"])
    running = wait_until(lambda: (j := job(job_id))["progress"] > 0 and j, timeout=60)
    worker_pid = int(running["worker"].rsplit("/", 1)[1].split(":")[0])
    assert worker_pid != worker.proc.pid
    os.kill(worker_pid, signal.SIGKILL)
    wait_until(lambda: job(job_id)["status"] == "finished", timeout=90,
               message="the job after its worker was killed")
    assert job(job_id)["attempts"] == 2
    assert "Worker 1 died, restarting" in worker.output()


def live_members(pgid):
    """The live processes of process group *pgid* (a zombie counts as gone)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError):
            text = stat.read_text()
            state, _ppid, pgrp = text[text.rindex(")") + 2:].split()[:3]
            if int(pgrp) == pgid and state != "Z":
                found.append(int(stat.parent.name))
    return found


def test_workers_of_a_killed_consumer_give_their_job_back_and_exit(consumer):
    """kill -9 of the consumer alone (the OOM killer's choice): its worker processes
    must not run on under PID 1; the running job is given back, not lost."""
    job_id = submit(slow_tasks.steps, 100, 0.05, owner_id=None)
    worker = consumer(workers=2, extra_env=SLOW_TASKS)
    group = worker.proc.pid
    wait_until(lambda: job(job_id)["progress"] > 0, timeout=60, message="the job to run")
    assert len(live_members(group)) == 4  # the consumer, its scheduler, two workers
    try:
        os.kill(worker.proc.pid, signal.SIGKILL)
        worker.proc.wait(timeout=10)
        wait_until(lambda: not live_members(group), timeout=30,
                   message="the orphaned worker processes to exit")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)
    released = job(job_id)
    assert (released["status"], released["attempts"], released["progress"]) == (
        "queued", 0, 0), worker.output()[-3000:]
    assert huey.storage.queue_size() == 1  # given back: runnable now, not when a lease lapses
    assert "gives its job back and exits" in worker.output()
    consumer(workers=1, extra_env=SLOW_TASKS)
    wait_until(lambda: job(job_id)["status"] == "finished", timeout=60)
    assert job(job_id)["attempts"] == 1


def test_a_job_leased_as_the_consumer_dies_is_given_back_unrun(settings):
    """The consumer's death can reach a worker after it leased a job and before the job
    was in flight (where the signal interrupts it): the job must not run in the orphaned
    worker (a CI run once saw it run there for 5 s); it is given back as it starts."""
    job_id = submit(slow_tasks.steps, 1, 0, owner_id=None)
    task = huey.dequeue()
    assert task is not None and task.id == job_id
    huey.stopping = True  # what the worker's signal handler sets
    try:
        huey.execute(task)
    finally:
        huey.stopping = False
    released = job(job_id)
    assert (released["status"], released["attempts"], released["progress"]) == (
        "queued", 0, 0)
    assert huey.storage.queue_size() == 1
    task = huey.dequeue()  # and it runs once a live worker takes it
    huey.execute(task)
    assert (job(job_id)["status"], job(job_id)["attempts"]) == ("finished", 1)


@pytest.fixture
def small_disk(tmp_path, request):
    """The test's data directory on a 16 MiB tmpfs of its own. Mounting needs root
    (CAP_SYS_ADMIN); where that is refused the test is skipped, and the storage
    test of a full disk (tests/test_storage.py, SQLITE_FULL at the SQLite layer)
    still runs."""
    data = tmp_path / "data"
    data.mkdir()
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs",
                            str(data)], capture_output=True, text=True)
    if mount.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mount.stderr.strip()}")
    try:
        yield request.getfixturevalue("settings")
    finally:
        subprocess.run(["umount", "--lazy", str(data)], check=True)


def fill(path: Path) -> None:
    """Write *path* until its file system has no space left."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for chunk in (1 << 16, 1 << 12, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * chunk)
    finally:
        os.close(fd)


def test_a_full_disk_is_one_log_line_a_minute_and_work_resumes_when_space_returns(
        small_disk, tmp_path):
    settings = small_disk
    worker = Consumer(settings, workers=2, extra_env=SLOW_TASKS)
    worker.log = tmp_path / "consumer.log"  # not on the disk that fills up
    worker.start()
    try:
        wait_until(lambda: huey.storage.sql("select count(*) from consumer",
                                            results=True)[0][0], timeout=30)
        due = time.time() + 3
        job_id = submit(slow_tasks.steps, 1, 0.0, owner_id=None, delay=3)
        fill(settings.data_dir / "filler")
        with pytest.raises(StorageFull):
            submit(slow_tasks.steps, 1, 0.0, owner_id=None)
        # Every second the consumer's heartbeat fails, and from `due` on its scheduler
        # fails to move the job into the queue: a few seconds of both.
        wait_until(lambda: time.time() > due + 3 and "data is full" in worker.output(),
                   timeout=60, message="the full disk to be logged")
        full = [line for line in worker.output().splitlines() if "data is full" in line]
        assert len(full) == 1 and "once a minute" in full[0], worker.output()[-3000:]
        assert "Traceback" not in worker.output()
        assert job(job_id)["status"] == "queued"
        (settings.data_dir / "filler").unlink()
        wait_until(lambda: job(job_id)["status"] == "finished", timeout=60,
                   message="the job once space returned")
        lines = worker.output().splitlines()
        assert len([line for line in lines if "data is full" in line]) == 1
        wait_until(lambda: "writable again" in worker.output(), timeout=30)
        assert worker.output().count("writable again") == 1
    finally:
        worker.stop()


def tolerant(predicate):
    """*predicate*, reading False while the database cannot be reached."""
    def check():
        try:
            return predicate()
        except Unavailable:
            return False
    return check


@pytest.fixture
def private_postgres():
    """A PostgreSQL cluster of this test's own (it may be restarted)."""
    cluster = Cluster()
    yield cluster
    cluster.close()


def test_a_postgresql_restart_loses_no_job_and_is_logged_once(tmp_path, monkeypatch,
                                                              private_postgres):
    url = private_postgres.url
    monkeypatch.setenv("QRQ_DATABASE_URL", url)
    monkeypatch.setenv("QRQ_DATA_DIR", str(tmp_path / "data"))
    settings = load_settings(lease_seconds=3.0)
    settings.ensure_dirs()
    huey.init(settings)
    worker = Consumer(settings, workers=2, extra_env=SLOW_TASKS)
    try:
        ids = [submit(slow_tasks.steps, 10, 0.2, owner_id=None) for _ in range(6)]
        worker.start()
        wait_until(lambda: "running" in statuses(ids), timeout=60, message="a job running")
        # Down until the consumer has said so (a restart shorter than the pools' wait
        # for a connection is absorbed without a line: they try a connection the
        # restart ended before lending it), then back.
        with private_postgres.stopped():
            wait_until(lambda: "cannot be reached" in worker.output(), timeout=60,
                       message="the consumer to log the outage")
        wait_until(tolerant(lambda: all(s == "finished" for s in statuses(ids))),
                   timeout=120, message="every job to finish after the restart")
        assert huey.storage.backlog() == 0
        output = worker.output()
        assert "Traceback" not in output, output[-3000:]
        assert output.count("cannot be reached") == 1, output[-3000:]
        assert output.count("reachable again") <= 1, output[-3000:]
    finally:
        worker.stop()
        huey.storage.dispose()
