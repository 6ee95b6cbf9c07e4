"""qrq's driver for the PostgreSQL benchmarks (bench/_pg_support.py starts it).

Runs with the environment of one qrq system (``QRQ_DATA_DIR``, and ``QRQ_DATABASE_URL``
for PostgreSQL; ``QRQ_TASK_MODULES=_noop_tasks``) and answers each command on stdin with
one JSON line, the protocol of bench/peers/peer.py:

* ``enqueue N``: N no-op jobs (``bench.noop``) through ``qrq.queue.submit``, one after
  the other (each its own transaction with its job record); seconds taken.
* ``enqueue-pdf N``: N PDF jobs (``generate_qr_pdf`` of the demo's template 1, 8 copies).
* ``left``: jobs not ended (queued or running).
* ``pickup FILE``: enqueue one no-op and wait until it ends: its record's ``started_at``
  (stamped by the lease) minus its ``created_at`` (stamped just before the enqueue), in ms.
  FILE is unused (the peers' jobs stamp a file).
"""

from __future__ import annotations

import json
import sys
import time

import _noop_tasks

from qrq.config import load_settings
from qrq.queue import huey, jobs, submit
from tasks.pdf import generate_qr_pdf

PDF_OPTIONS = {"copies": 8}


def wait_ended(job_id: str, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = jobs.get(huey.storage, job_id)
        if record and record["status"] not in ("queued", "running"):
            return record
        time.sleep(0.005)
    raise RuntimeError(f"job {job_id} did not end in {timeout}s")


def enqueue(count: int, pdf: bool = False) -> float:
    began = time.perf_counter()
    for _ in range(count):
        if pdf:
            submit(generate_qr_pdf, 1, PDF_OPTIONS, owner_id=None)
        else:
            submit(_noop_tasks.noop, owner_id=None)
    return time.perf_counter() - began


def left() -> int:
    return huey.storage.sql("select count(*) from job where status in ('queued', 'running')",
                            results=True)[0][0]


def pickup() -> float:
    record = wait_ended(submit(_noop_tasks.noop, owner_id=None))
    return 1000 * (record["started_at"] - record["created_at"])


def main() -> None:
    huey.init(load_settings())
    try:
        for line in sys.stdin:
            command, *args = line.split()
            if command == "enqueue":
                answer: dict = {"seconds": enqueue(int(args[0]))}
            elif command == "enqueue-pdf":
                answer = {"seconds": enqueue(int(args[0]), pdf=True)}
            elif command == "left":
                answer = {"left": left()}
            elif command == "pickup":
                answer = {"ms": pickup()}
            elif command == "quit":
                break
            else:
                answer = {"error": f"unknown command {command!r}"}
            print(json.dumps(answer), flush=True)
    finally:
        if hasattr(huey.storage, "dispose"):
            huey.storage.dispose()


if __name__ == "__main__":
    main()
