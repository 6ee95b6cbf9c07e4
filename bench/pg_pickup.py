"""Idle pickup latency and idle CPU of a qrq consumer on PostgreSQL (LISTEN/NOTIFY).

Starts a private PostgreSQL cluster (``.ci/postgres start`` into a temporary directory),
then ``huey_consumer huey_app.huey -w 4 -k process`` with ``QRQ_DATABASE_URL`` pointing at
it (4 process workers, qrq's settings otherwise). The consumer first sits idle for
``--idle`` seconds; its process group's CPU time over that period is the idle CPU. Then
no-op jobs (``bench.noop``) are enqueued one at a time, ``--spacing`` seconds apart
(random within the range), each awaited before the next, so every pickup meets idle
workers. Latency is the job record's ``started_at`` (stamped by the lease) minus its
``created_at`` (stamped just before the enqueue); both are this machine's clock.

Run: ``flock /tmp/qrq-bench.lock .venv/bin/python bench/pg_pickup.py`` (or
``--idle 5 --samples 30`` for a quick look). Targets (issue 14): pickup p99 < 20 ms, idle
CPU < 1% per consumer. The last line of output is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _proc import exit_on_sigterm, group_cpu_seconds
from _support import REPO, env_for, load_average, median, percentile, start, stop

HUEY_CONSUMER = str(Path(sys.executable).parent / "huey_consumer")
TARGET_P99_MS = 20.0
TARGET_IDLE_CPU = 1.0  # percent of one core


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--idle", type=float, default=30.0, help="idle seconds first")
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--spacing", type=float, nargs=2, default=(0.05, 0.25))
    args = parser.parse_args()
    exit_on_sigterm()
    work = Path(tempfile.mkdtemp(prefix="qrq-pg-pickup-"))
    work.chmod(0o755)
    cluster = work / "cluster"
    url = subprocess.run([str(REPO / ".ci" / "postgres"), "start", str(cluster)],
                         check=True, capture_output=True, text=True).stdout.strip()
    consumer = None
    try:
        env = env_for(work / "data", QRQ_DATABASE_URL=url, QRQ_TASK_MODULES="_noop_tasks",
                      PYTHONPATH=str(REPO / "bench"))
        os.environ.update({k: v for k, v in env.items() if k.startswith("QRQ_")})
        sys.path.insert(0, str(REPO))
        import _noop_tasks

        from qrq.config import load_settings
        from qrq.queue import huey, jobs, submit

        huey.init(load_settings())
        consumer = start([HUEY_CONSUMER, "huey_app.huey", "-w", "4", "-k", "process"],
                         work / "consumer.log", cwd=REPO, env=env)
        first = submit(_noop_tasks.noop, owner_id=None)  # the consumer is up and listening
        wait_ended(jobs, huey.storage, first, 60)
        cpu_before, wall_before = group_cpu_seconds(consumer.pid), time.monotonic()
        time.sleep(args.idle)
        idle_cpu = 100 * (group_cpu_seconds(consumer.pid) - cpu_before) / (
            time.monotonic() - wall_before)
        latencies = []
        for _ in range(args.samples):
            time.sleep(random.uniform(*args.spacing))
            job_id = submit(_noop_tasks.noop, owner_id=None)
            record = wait_ended(jobs, huey.storage, job_id, 30)
            latencies.append(1000 * (record["started_at"] - record["created_at"]))
        huey.storage.dispose()
    finally:
        stop(consumer)
        subprocess.run([str(REPO / ".ci" / "postgres"), "stop", str(cluster)], check=False)
    result = {
        "bench": "pg_pickup", "samples": len(latencies), "idle_seconds": args.idle,
        "pickup_ms": {"median": round(median(latencies), 2),
                      "p99": round(percentile(latencies, 99), 2),
                      "max": round(max(latencies), 2)},
        "target_p99_ms": TARGET_P99_MS,
        "idle_cpu_percent": round(idle_cpu, 3), "target_idle_cpu_percent": TARGET_IDLE_CPU,
        "load_average": load_average(),
    }
    print(f"pickup p50 {result['pickup_ms']['median']} ms, p99 {result['pickup_ms']['p99']} "
          f"ms; idle CPU {result['idle_cpu_percent']}% of a core (4 workers)")
    print(json.dumps(result))


def wait_ended(jobs, storage, job_id: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = jobs.get(storage, job_id)
        if record and record["status"] not in ("queued", "running"):
            return record
        time.sleep(0.005)
    raise RuntimeError(f"job {job_id} did not end in {timeout}s")


if __name__ == "__main__":
    main()
