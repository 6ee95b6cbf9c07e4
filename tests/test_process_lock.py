"""The lock a consumer's processes share (qrq/queue/process_lock.py): it excludes forked
processes and threads, and a holder that dies blocks no one; the consumer's workers
take it around each write transaction."""

import contextlib
import fcntl
import os
import subprocess
import sys
import threading

import pytest

from qrq.queue import huey
from qrq.queue.process_lock import ProcessLock
from tests.conftest import wait_until


@contextlib.contextmanager
def held_by_another_process(fd: int):
    """A process that holds the ``fcntl`` lock on *fd* until it is killed."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, time\n"
         f"fcntl.lockf({fd}, fcntl.LOCK_EX)\n"
         "print('locked', flush=True)\ntime.sleep(600)\n"],
        pass_fds=[fd], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        yield holder
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()


def test_a_forked_process_waits_while_another_holds_the_lock():
    lock = ProcessLock()
    entered, leave = os.pipe(), os.pipe()
    pid = os.fork()
    if pid == 0:  # the holder
        try:
            with lock:
                os.write(entered[1], b"x")
                os.read(leave[0], 1)
        finally:
            os._exit(0)
    try:
        assert os.read(entered[0], 1) == b"x"
        taken = threading.Event()
        waiter = threading.Thread(target=lambda: (lock.__enter__(), taken.set()), daemon=True)
        waiter.start()
        # While the other process holds it, the lock cannot be had here.
        with pytest.raises(OSError):
            fcntl.lockf(lock.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert not taken.is_set()
        os.write(leave[1], b"x")
        wait_until(taken.is_set, message="the waiter to get the lock once it was released")
        lock.__exit__(None, None, None)
    finally:
        os.waitpid(pid, 0)
        for fd in (*entered, *leave):
            os.close(fd)


def test_threads_of_one_process_take_turns():
    lock = ProcessLock()
    inside, most = [0], [0]

    def work():
        for _ in range(200):
            with lock:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
                inside[0] -= 1

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most[0] == 1


def test_a_process_killed_holding_the_lock_blocks_no_one():
    lock = ProcessLock()
    with held_by_another_process(lock.fd) as holder:
        taken = threading.Event()
        waiter = threading.Thread(target=lambda: (lock.__enter__(), taken.set()), daemon=True)
        waiter.start()
        holder.kill()
        holder.wait()
        wait_until(taken.is_set, message="the lock after its holder died")
        lock.__exit__(None, None, None)


def blocked_waiters(pid: int) -> int:
    """Lock requests of process *pid* that wait on another's lock ("->" in /proc/locks)."""
    with open("/proc/locks") as locks:
        return sum(1 for line in locks if "->" in line and f" {pid} " in line)


@pytest.mark.sqlite_only("SQLite's write lock (PostgreSQL's rows lock themselves)")
def test_a_consumers_write_transactions_queue_on_its_lock(settings):
    assert huey.storage.writers is not None
    assert not isinstance(huey.storage.writers, ProcessLock)  # the web app's do not
    huey.create_consumer(workers=2, worker_type="process")  # the workers would fork from here
    lock = huey.storage.writers
    assert isinstance(lock, ProcessLock)
    with held_by_another_process(lock.fd) as holder:
        writer = threading.Thread(target=huey.storage.sql, daemon=True, kwargs={
            "query": "insert into kv (queue, key, value) values ('t', 'k', x'00')",
            "commit": True})
        writer.start()
        wait_until(lambda: blocked_waiters(os.getpid()) == 1,
                   message="the write to wait for the lock")
        assert huey.storage.sql("select count(*) from kv where queue = 't'", results=True) \
            == [(0,)]
        holder.kill()
        holder.wait()
        writer.join(timeout=30)
        assert huey.storage.sql("select count(*) from kv where queue = 't'", results=True) \
            == [(1,)]
