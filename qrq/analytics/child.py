"""The child process of :mod:`qrq.analytics.worker`: read one share, write it as JSON lines.

Run as ``python -m qrq.analytics.child`` with the job as one JSON object on stdin. It
writes ``{"done": k}`` after each read, then ``{"share": ...}`` or ``{"error": ...}``
(one line: the job's error is shown to users; the traceback goes to stderr, the
consumer's log). A module of its own, which nothing imports, so that ``-m`` runs it
once.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from qrq.analytics.query import ReportQuery
from qrq.analytics.shares import read_share
from qrq.analytics.worker import taker
from qrq.sqlite_deadline import interrupt_when, past


def send(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def main() -> None:
    try:
        job = json.load(sys.stdin)
        limit = None
        if job["seconds"] is not None:
            stop = past(time.monotonic() + job["seconds"])
            limit = lambda conn: interrupt_when(conn, stop)  # noqa: E731
        share = read_share([Path(p) for p in job["paths"]],
                           ReportQuery.from_dict(job["query"]), job["share"], job["shares"],
                           limit=limit, progress=lambda done: send({"done": done}),
                           busy_timeout=job["busy_timeout"],
                           take=taker(job["tokens"]) if "tokens" in job else None)
        send({"share": share})
    except sqlite3.OperationalError as exc:
        send({"error": str(exc), "interrupted": "interrupt" in str(exc)})
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it
        traceback.print_exc(limit=5, file=sys.stderr)
        send({"error": f"{type(exc).__name__}: {exc}"})


if __name__ == "__main__":
    main()
