"""Analytics on several cores: the shares of a report read by child processes (and
share 0 here, unless this is a job's long-lived worker process).

The children are ``python -m qrq.analytics.child`` processes, not multiprocessing
ones: huey's worker processes are daemons, which may not start multiprocessing
children. A child gets its job as one JSON object on stdin, writes one JSON line
per read it has done (``{"done": k}``), then its share
(``{"share": ...}``, see :func:`qrq.analytics.shares.read_share`) or an error, and
exits.
Threads would not do: this SQLite build takes a global lock on every allocation, and
taking each bucket's hashes from SQLite is Python work that holds the GIL.

Share 0 runs in the calling process while the children start (~60 ms each), so no
core waits for them; a job runs it in a child too (``here=False``), so that the
consumer's long-lived worker process never holds a report's hashes or numpy (+18 MB
of PSS for as long as it lives), at the cost of that start-up.

The top-N counts are handed out by work stealing: the index of every database is
written, 4 bytes each, into a pipe before any share starts, and the write end is
closed; each share (here and in every child, which inherits the read end) reads one
index at a time once its buckets are done, until the pipe is empty. A pipe read of 4
bytes from a pipe holding only whole indexes returns one whole index to exactly one
reader, so no database is read twice or skipped, and a share slowed down by other
work takes fewer.

The parent kills its children whenever it stops early: an error, a cancel, or its own
time limit (a signal in a process worker). A child also interrupts its own SQLite
queries when the job's time is up (:mod:`qrq.sqlite_deadline`, as share 0 does
here).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import queue
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qrq.analytics.query import ReportQuery
from qrq.analytics.shard import Limit
from qrq.analytics.shares import read_share
from qrq.sqlite_deadline import interrupt_when, past

_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)

# The children import this very qrq, wherever the parent's working directory is.
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]


def run_shares(paths: list[Path], query: ReportQuery, processes: int,
               progress: Callable[[float], None], *, limit: Limit | None = None,
               busy_timeout: float = 5.0, seconds: float | None = None,
               here: bool = True) -> list[dict[str, Any]]:
    """Read the *processes* shares of the report, share 0 here (its connections
    wrapped in *limit*) unless not *here*, the others in child processes; their
    results.

    *progress* gets how many databases' worth of reads are done, across the shares;
    an exception it raises (a cancel) stops the children. A query stopped by the time
    limit (*seconds*, the job's time left, here and in the children) raises
    ``sqlite3.OperationalError("interrupted")``.
    """
    seconds = seconds if seconds is not None and seconds < 1e9 else None
    job = {"paths": [str(p) for p in paths], "query": query.to_dict(), "shares": processes,
           "busy_timeout": busy_timeout, "seconds": seconds}
    # Every share reads its buckets of each database, and the top-N counts once.
    total = processes * len(paths) + len(paths)
    done = [0] * processes
    lines: queue.Queue = queue.Queue()
    children: dict[int, subprocess.Popen] = {}  # by share
    tokens = _token_pipe(len(paths))
    try:
        for share in range(1 if here else 0, processes):
            child = subprocess.Popen([sys.executable, "-m", "qrq.analytics.child"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, cwd=_PACKAGE_ROOT, pass_fds=(tokens,))
            children[share] = child
            child.stdin.write(json.dumps({**job, "share": share, "tokens": tokens}))
            child.stdin.close()
            threading.Thread(target=_forward, args=(child, share, lines), daemon=True,
                             name=f"qrq-analytics-share-{share}").start()
        results: list[dict[str, Any] | None] = [None] * processes
        running = [len(children)]

        def report(mine: int) -> None:
            done[0] = mine
            _drain(lines, children, done, results, running, block=False)
            progress(len(paths) * sum(done) / total)

        if here:
            deadline = time.monotonic() + seconds if seconds is not None else None
            results[0] = read_share(paths, query, 0, processes,
                                    limit=_both(limit, deadline), progress=report,
                                    busy_timeout=busy_timeout, take=taker(tokens))
        while running[0]:
            _drain(lines, children, done, results, running, block=True)
            progress(len(paths) * sum(done) / total)
        return results
    finally:
        os.close(tokens)
        for child in children.values():
            if child.poll() is None:
                child.kill()
            child.wait()
            child.stdout.close()


def _token_pipe(count: int) -> int:
    """The read end of a pipe holding the indexes 0 .. count-1, 4 bytes each, whose
    write end is closed (so a reader sees the end once they are taken)."""
    read_end, write_end = os.pipe()
    try:
        payload = b"".join(j.to_bytes(4, "little") for j in range(count))
        if len(payload) > 65536:  # more than a pipe holds by default
            fcntl.fcntl(write_end, _F_SETPIPE_SZ, len(payload))
        written = 0
        while written < len(payload):
            written += os.write(write_end, payload[written:])
    except BaseException:
        os.close(read_end)
        raise
    finally:
        os.close(write_end)
    return read_end


def taker(fd: int) -> Callable[[], int | None]:
    """Take the next database index from the token pipe *fd*; None once it is empty."""
    def take() -> int | None:
        raw = os.read(fd, 4)
        return int.from_bytes(raw, "little") if len(raw) == 4 else None
    return take


def _both(limit: Limit | None, deadline: float | None) -> Limit | None:
    """*limit* (a connection wrapper, or None) and a stop at *deadline*, together.

    A connection has one progress handler, so within *limit*'s block the deadline's
    handler is the one that runs (the job's *seconds* are its time left, the same
    deadline); *limit* still wraps the connection.
    """
    if deadline is None:
        return limit

    @contextlib.contextmanager
    def wrapped(conn: sqlite3.Connection):
        with limit(conn) if limit else contextlib.nullcontext(), \
                interrupt_when(conn, past(deadline)):
            yield conn
    return wrapped


def _forward(child: subprocess.Popen, share: int, lines: queue.Queue) -> None:
    try:
        for line in child.stdout:
            lines.put((share, line))
    except (ValueError, OSError):  # closed under it: the child was stopped (a time limit)
        pass
    lines.put((share, None))


def _drain(lines: queue.Queue, children: dict[int, subprocess.Popen], done: list[int],
           results: list, running: list[int], block: bool) -> None:
    """Handle the children's messages waiting in *lines* (at least one if *block*):
    progress into *done*, results into *results*; raise a child's error."""
    while running[0]:
        try:
            share, line = lines.get(block=block)
        except queue.Empty:
            return
        block = False
        if line is None:
            running[0] -= 1
            if results[share] is None:
                code = children[share].wait()
                raise RuntimeError(f"analytics worker {share} exited with {code} and no "
                                   "result")
            continue
        message = json.loads(line)
        if "done" in message:
            done[share] = message["done"]
        elif "share" in message:
            results[share] = message["share"]
        elif message.get("interrupted"):
            raise sqlite3.OperationalError(message["error"])
        else:  # one line: the job's error is shown to users (the trace went to stderr)
            raise RuntimeError(f"analytics worker {share} failed: {message['error']}")
