"""Process-group figures from /proc (Linux): resident memory and CPU time; SIGTERM handling.

The benchmarks start every server in its own session, so a consumer and its worker
processes share one process group whose id is the consumer's pid.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may hold spaces; it ends at the last ')'.
    return text[text.rindex(")") + 2:].split()


def group_pids(pgid: int) -> list[int]:
    """The live processes of process group *pgid*."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            # After the name: state, ppid, pgrp, ...
            if fields is not None and fields[0] != "Z" and int(fields[2]) == pgid:
                pids.append(int(entry))
    return pids


def rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def group_rss(pgid: int) -> tuple[int, int]:
    """Total resident memory of the group in bytes, and how many processes it has."""
    pids = group_pids(pgid)
    return sum(rss_bytes(pid) for pid in pids), len(pids)


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds of the group's live processes (and their reaped children)."""
    total = 0
    for pid in group_pids(pgid):
        fields = _stat_fields(pid)
        if fields is not None:
            # utime, stime, cutime, cstime are fields 14-17 of stat (11-14 after the name).
            total += sum(int(f) for f in fields[11:15])
    return total / TICKS


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so a benchmark's ``finally`` blocks stop its servers."""
    def handler(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
