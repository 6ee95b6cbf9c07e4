"""The consumer's outage log: one line per outage for the whole consumer, even when
its forked workers all meet the full disk at the same instant."""

import logging
import multiprocessing
import os

from qrq.errors import StorageFull
from qrq.queue.consumer import StorageFullLog


def failed_poll() -> logging.LogRecord:
    try:
        raise StorageFull("The disk holding qrq's data is full")
    except StorageFull as exc:
        return logging.LogRecord("huey.consumer", logging.ERROR, __file__, 1,
                                 "Error reading from queue", (), (type(exc), exc,
                                                                  exc.__traceback__))


def test_forked_workers_failing_at_once_log_one_line():
    for _ in range(20):  # the race is in the first failure: meet it many times
        assert lines_logged(StorageFullLog(), workers=2) == 1


def lines_logged(log: StorageFullLog, workers: int) -> int:
    """How many of the failed polls of *workers* forked processes *log* lets through."""
    start = multiprocessing.Event()
    passed = multiprocessing.Value("i", 0)
    pids = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:  # a worker: every poll fails, all of them from the same instant
            code = 1
            try:
                start.wait(10)
                mine = sum(log.filter(failed_poll()) for _ in range(20))
                with passed.get_lock():
                    passed.value += mine
                code = 0
            finally:
                os._exit(code)
        pids.append(pid)
    start.set()
    assert [os.waitpid(pid, 0)[1] for pid in pids] == [0] * workers
    return passed.value


def test_the_line_says_how_often_and_the_record_loses_its_traceback():
    log = StorageFullLog()
    record = failed_poll()
    assert log.filter(record)
    assert record.exc_info is None
    assert "logged once a minute" in record.getMessage()
    assert "data is full" in record.getMessage()
    assert not log.filter(failed_poll())
