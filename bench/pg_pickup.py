"""Idle pickup latency and idle CPU on PostgreSQL: qrq vs qrq-on-SQLite, procrastinate, PgQueuer.

The four systems of bench/_pg_support.py (qrq on the benchmark's PostgreSQL server with
``huey_consumer huey_app.huey -w 4 -k process``, waking on LISTEN/NOTIFY; qrq on SQLite
with the same consumer, polling every ``QRQ_POLL_INTERVAL``; procrastinate 3 and PgQueuer
1 on the same server, from their own venv, both on LISTEN/NOTIFY). All four consumers
start, each takes one warm-up job, then all sit idle for ``--idle`` seconds: each
consumer's process group's CPU time over that period is its idle CPU. Then no-op jobs
are enqueued one at a time through each system's driver, the systems in an order that
rotates every sample, ``--spacing`` seconds apart (random within the range), each job
awaited before the next, so every pickup meets idle workers.

Latency, qrq: the job record's ``started_at`` (stamped by the lease) minus its
``created_at`` (stamped just before the enqueue). Peers: the time the job's body ran
minus the time just before the enqueue (a little later than a lease stamp: it includes
the dispatch to the body). All on this machine's clock.

Run: ``flock /tmp/qrq-bench.lock .venv/bin/python bench/pg_pickup.py`` (or ``--idle 5
--samples 30`` for a quick look; ``--database-url`` for an existing server). Targets
(issue 14), for qrq-pg: pickup p99 < 20 ms, idle CPU < 1% per consumer. The last line of
output is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _pg_support import (
    SYSTEMS,
    add_server_argument,
    check_peers,
    close_systems,
    open_systems,
    server,
    server_settings,
)
from _proc import exit_on_sigterm, group_cpu_seconds
from _support import load_average, median, percentile

TARGET_P99_MS = 20.0
TARGET_IDLE_CPU = 1.0  # percent of one core


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--idle", type=float, default=30.0, help="idle seconds first")
    parser.add_argument("--samples", type=int, default=100, help="pickups per system")
    parser.add_argument("--spacing", type=float, nargs=2, default=(0.05, 0.25))
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=SYSTEMS)
    add_server_argument(parser)
    args = parser.parse_args(argv)
    exit_on_sigterm()
    names = tuple(args.systems)
    if set(names) & {"procrastinate", "pgqueuer"}:
        check_peers()
    work = Path(tempfile.mkdtemp(prefix="qrq-pg-pickup-"))
    work.chmod(0o755)
    latencies: dict[str, list[float]] = {name: [] for name in names}
    idle_cpu: dict[str, float] = {}
    load_start = load_average()
    try:
        with server(args.database_url, work) as (url, _):
            settings = server_settings(url)
            systems = open_systems(names, work, url)
            try:
                for system in systems.values():
                    system.start_consumer()
                for system in systems.values():  # up, listening, and warm
                    system.driver.ask("pickup", system.stamps)
                print(f"machine: {os.cpu_count()} CPUs, load average {load_start}; "
                      f"{', '.join(names)} idle {args.idle:g} s, then {args.samples} jobs "
                      f"each, {args.spacing[0]:g}-{args.spacing[1]:g} s apart", flush=True)
                cpu_before = {n: group_cpu_seconds(s.consumer.pid) for n, s in systems.items()}
                wall_before = time.monotonic()
                time.sleep(args.idle)
                wall = time.monotonic() - wall_before
                for name, system in systems.items():
                    idle_cpu[name] = 100 * (group_cpu_seconds(system.consumer.pid)
                                            - cpu_before[name]) / wall
                rng = random.Random(0)
                for i in range(args.samples):
                    order = names[i % len(names):] + names[:i % len(names)]
                    for name in order:
                        time.sleep(rng.uniform(*args.spacing))
                        system = systems[name]
                        latencies[name].append(system.driver.ask("pickup", system.stamps)["ms"])
            finally:
                close_systems(systems)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    figures = {name: {"median": round(median(v), 2), "p99": round(percentile(v, 99), 2),
                      "max": round(max(v), 2), "idle_cpu_percent": round(idle_cpu[name], 3)}
               for name, v in latencies.items()}
    print(f"\n{'system':<14} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'idle CPU %':>10}")
    for name, f in figures.items():
        print(f"{name:<14} {f['median']:8.2f} {f['p99']:8.2f} {f['max']:8.1f} "
              f"{f['idle_cpu_percent']:10.3f}")
    qrq = figures.get("qrq-pg")
    result = {
        "bench": "pg_pickup", "samples": args.samples, "idle_seconds": args.idle,
        "server": settings, "systems": figures,
        "pickup_ms": {k: qrq[k] for k in ("median", "p99", "max")} if qrq else None,
        "target_p99_ms": TARGET_P99_MS,
        "idle_cpu_percent": qrq["idle_cpu_percent"] if qrq else None,
        "target_idle_cpu_percent": TARGET_IDLE_CPU,
        "target_met": bool(qrq) and qrq["p99"] < TARGET_P99_MS
        and qrq["idle_cpu_percent"] < TARGET_IDLE_CPU,
        "load_average": [load_start, load_average()],
    }
    if qrq:
        print(f"qrq-pg: pickup p50 {qrq['median']} ms, p99 {qrq['p99']} ms (target < "
              f"{TARGET_P99_MS:g}); idle CPU {qrq['idle_cpu_percent']}% of a core (target < "
              f"{TARGET_IDLE_CPU:g}%); load average {load_start} -> {load_average()}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
