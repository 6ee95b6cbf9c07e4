"""Analytics on several cores: each share of a report read by a child process.

The children are ``python -m qrq.analytics_worker`` processes, not multiprocessing
ones: huey's worker processes are daemons, which may not start multiprocessing
children. A child gets its job as one JSON object on stdin, writes one JSON line
per database it has read (``{"done": k}``), then its share
(``{"share": ...}``, see :func:`qrq.analytics.read_share`) or an error, and exits.
Threads would not do: counting visitors is Python work that holds the GIL, and this
SQLite build takes a global lock on every allocation.

The parent kills its children whenever it stops early: an error, a cancel, or its own
time limit (a signal in a process worker). A child also interrupts its own SQLite
queries when the job's time is up, as :func:`qrq.queue.time_limited` does for a
connection of the job's own process (the child cannot import :mod:`qrq.queue`, which
opens the queue database).
"""

from __future__ import annotations

import contextlib
import json
import queue
import sqlite3
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qrq.analytics_query import ReportQuery

# The children import this very qrq, wherever the parent's working directory is.
_PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def run_shares(paths: list[Path], query: ReportQuery, processes: int,
               progress: Callable[[float], None], *, busy_timeout: float = 5.0,
               seconds: float | None = None) -> list[dict[str, Any]]:
    """Run the *processes* shares of the report in child processes; their results.

    *progress* gets the mean number of databases the children have read. A child's
    query stopped by the time limit raises ``sqlite3.OperationalError("interrupted")``
    here, like a query of this process would.
    """
    job = {"paths": [str(p) for p in paths], "query": query.to_dict(), "shares": processes,
           "busy_timeout": busy_timeout,
           "seconds": seconds if seconds is not None and seconds < 1e9 else None}
    lines: queue.Queue = queue.Queue()
    children: list[subprocess.Popen] = []
    try:
        for share in range(processes):
            child = subprocess.Popen([sys.executable, "-m", "qrq.analytics_worker"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, cwd=_PACKAGE_ROOT)
            children.append(child)
            child.stdin.write(json.dumps({**job, "share": share}))
            child.stdin.close()
            threading.Thread(target=_forward, args=(child, share, lines), daemon=True,
                             name=f"qrq-analytics-share-{share}").start()
        return _collect(children, lines, progress)
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
            child.wait()
            child.stdout.close()


def _forward(child: subprocess.Popen, share: int, lines: queue.Queue) -> None:
    for line in child.stdout:
        lines.put((share, line))
    lines.put((share, None))


def _collect(children: list[subprocess.Popen], lines: queue.Queue,
             progress: Callable[[float], None]) -> list[dict[str, Any]]:
    done = [0] * len(children)
    results: list[dict[str, Any] | None] = [None] * len(children)
    running = len(children)
    while running:
        share, line = lines.get()
        if line is None:
            running -= 1
            if results[share] is None:
                code = children[share].wait()
                raise RuntimeError(f"analytics worker {share} exited with {code} and no "
                                   "result")
            continue
        message = json.loads(line)
        if "done" in message:
            done[share] = message["done"]
            progress(sum(done) / len(done))
        elif "share" in message:
            results[share] = message["share"]
        elif message.get("interrupted"):
            raise sqlite3.OperationalError(message["error"])
        else:
            raise RuntimeError(f"analytics worker {share} failed: {message['error']}")
    return results


@contextlib.contextmanager
def _deadline(conn: sqlite3.Connection, deadline: float):
    conn.set_progress_handler(lambda: 1 if time.monotonic() >= deadline else 0, 10_000)
    try:
        yield conn
    finally:
        conn.set_progress_handler(None, 0)


def main() -> None:
    """The child: read one share and write it to stdout as JSON lines."""
    from qrq.analytics import read_share

    def send(message: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(message, separators=(",", ":")) + "\n")
        sys.stdout.flush()

    try:
        job = json.load(sys.stdin)
        limit = None
        if job["seconds"] is not None:
            deadline = time.monotonic() + job["seconds"]
            limit = lambda conn: _deadline(conn, deadline)  # noqa: E731
        share = read_share([Path(p) for p in job["paths"]],
                           ReportQuery.from_dict(job["query"]), job["share"], job["shares"],
                           limit=limit, progress=lambda done: send({"done": done}),
                           busy_timeout=job["busy_timeout"])
        send({"share": share})
    except sqlite3.OperationalError as exc:
        send({"error": str(exc), "interrupted": "interrupt" in str(exc)})
    except Exception:  # noqa: BLE001 - reported to the parent, which raises it
        send({"error": traceback.format_exc(limit=5)})


if __name__ == "__main__":
    main()
