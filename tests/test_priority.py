"""The consumer's worker processes run at a lower CPU and I/O priority than the consumer."""

import ctypes
import os
import platform
from pathlib import Path

import pytest
from conftest import wait_until

from qrq.queue.priority import lower_priority

linux_x86 = pytest.mark.skipif(platform.system() != "Linux" or platform.machine() != "x86_64",
                               reason="reads priorities with Linux x86_64 syscalls")
_SYS_IOPRIO_GET = 252  # x86_64


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()
            if fields[0] != "Z" and int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def io_priority(pid: int) -> tuple[int, int]:
    """(class, level) of *pid*'s I/O priority; (-1, -1) if it cannot be read (gone)."""
    value = ctypes.CDLL(None, use_errno=True).syscall(_SYS_IOPRIO_GET, 1, pid)
    return (value >> 13, value & 0x1FFF) if value >= 0 else (-1, -1)


@linux_x86
def test_worker_processes_run_at_the_configured_lower_priority(consumer):
    worker = consumer(workers=2, extra_env={"QRQ_WORKER_NICE": "7",
                                            "QRQ_WORKER_IO_PRIORITY": "idle"})
    base = os.getpriority(os.PRIO_PROCESS, worker.proc.pid)

    def niced():
        kids = children(worker.proc.pid)
        lowered = [p for p in kids if os.getpriority(os.PRIO_PROCESS, p) == min(base + 7, 19)
                   and io_priority(p)[0] == 3]  # IOPRIO_CLASS_IDLE
        return (kids, lowered) if len(lowered) == 2 else None

    kids, lowered = wait_until(niced, message="two worker processes at nice +7, I/O idle")
    # The scheduler process (and the consumer) keep their priority.
    assert [os.getpriority(os.PRIO_PROCESS, p) for p in set(kids) - set(lowered)] == [base]
    assert io_priority(worker.proc.pid)[0] != 3


@linux_x86
def test_normal_priority_leaves_the_workers_alone(consumer):
    worker = consumer(workers=1, extra_env={"QRQ_WORKER_NICE": "0",
                                            "QRQ_WORKER_IO_PRIORITY": "normal"})
    base = os.getpriority(os.PRIO_PROCESS, worker.proc.pid)
    kids = wait_until(lambda: len(children(worker.proc.pid)) == 2
                      and children(worker.proc.pid), message="worker and scheduler")
    assert [os.getpriority(os.PRIO_PROCESS, p) for p in kids] == [base, base]
    assert all(io_priority(p) == io_priority(worker.proc.pid) for p in kids)


@linux_x86
def test_low_io_priority_is_best_effort_at_the_lowest_level():
    pid = os.fork()
    if pid == 0:  # lower a child's priority, never the test process's
        try:
            lower_priority(0, "low")
            os._exit(0 if io_priority(os.getpid()) == (2, 7) else 1)
        finally:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
