"""Enqueue and drain on PostgreSQL: qrq on PostgreSQL vs on SQLite vs procrastinate, PgQueuer.

The four systems of bench/_pg_support.py (qrq on the benchmark's PostgreSQL server, qrq
on SQLite, procrastinate 3 and PgQueuer 1 on the same server, each in a fresh database;
the peers run as subprocesses from their own venv, bench/peers/). Per repeat, in
alternating order (reversed every other repeat), each system:

1. enqueues N no-op jobs from its driver process, one call and one transaction each, with
   no consumer running (the Python-API enqueue rate);
2. starts its consumer (qrq: ``huey_consumer huey_app.huey -w 4 -k process``;
   procrastinate: ``run_worker(concurrency=4)``; PgQueuer: ``PgQueuer.run()``, batch 10)
   and the clock runs until the driver, polling every 10 ms, counts no job left. "From
   start" includes the consumer's start-up; "after first pickup" starts at the first poll
   that sees a job gone. CPU seconds: the consumer's process group plus, on a private
   cluster, the PostgreSQL server's processes, from the first pickup to the end.

Then, unless ``--pdf-jobs 0``, the same for PDF jobs (``generate_qr_pdf``, the demo's
template, 8 copies) on qrq-pg and qrq-sqlite only (the peers have no PDF task).
Figures are medians over repeats; ratios are paired (the median over repeats of each
repeat's ratio), to procrastinate for no-op jobs (the target: qrq-pg drain ≥
procrastinate's) and to qrq-sqlite for PDF jobs.

Run: ``flock /tmp/qrq-bench.lock .venv/bin/python bench/pg_queues.py`` (500 jobs, 3
repeats; a few minutes), ``--database-url postgresql://...`` for an existing server. The
last line of output is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _pg_support import (
    PG_SYSTEMS,
    SYSTEMS,
    add_server_argument,
    check_peers,
    close_systems,
    open_systems,
    server,
    server_cpu_seconds,
    server_settings,
)
from _proc import exit_on_sigterm, group_cpu_seconds
from _support import load_average, median

BASELINE = "procrastinate"


def drain_once(system, jobs: int, pdf: bool, postmaster: int | None, timeout: float) -> dict:
    """Enqueue *jobs* with no consumer, then time the consumer draining them."""
    enqueued = system.driver.ask("enqueue-pdf" if pdf else "enqueue", jobs)["seconds"]
    began = time.perf_counter()
    proc = system.start_consumer()
    first = cpu_first = server_first = None
    try:
        while True:
            left = system.driver.ask("left")["left"]
            now = time.perf_counter()
            if first is None and left < jobs:
                first, cpu_first = now, group_cpu_seconds(proc.pid)
                server_first = server_cpu_seconds(postmaster)
            if left == 0:
                cpu = group_cpu_seconds(proc.pid) - cpu_first
                server_end = server_cpu_seconds(postmaster)
                break
            if proc.poll() is not None:
                raise RuntimeError(f"{system.name}: the consumer exited with {proc.returncode}"
                                   f"; see {system.work / 'consumer.log'}")
            if now - began > timeout:
                raise RuntimeError(f"{system.name}: {left} jobs left after {timeout:g}s")
            time.sleep(0.01)
    finally:
        system.stop_consumer()
    server_cpu = (server_end - server_first
                  if system.name in PG_SYSTEMS and server_first is not None else None)
    return {"enqueue_jobs_per_s": round(jobs / enqueued, 1),
            "jobs_per_s": round(jobs / (now - began), 1),
            "jobs_per_s_after_first": round(jobs / (now - first), 1),
            "consumer_cpu_s": round(cpu, 2),
            "server_cpu_s": round(server_cpu, 2) if server_cpu is not None else None,
            "load_avg": round(os.getloadavg()[0], 2)}


def compare(systems: dict, names: tuple, jobs: int, repeats: int, pdf: bool,
            postmaster: int | None, timeout: float, baseline: str) -> dict:
    runs: dict = collections.defaultdict(list)
    kind = "PDF" if pdf else "no-op"
    for repeat in range(repeats):
        for name in names if repeat % 2 == 0 else tuple(reversed(names)):
            run = drain_once(systems[name], jobs, pdf, postmaster, timeout)
            runs[name].append(run)
            server_cpu = (f" + server {run['server_cpu_s']:.2f}"
                          if run["server_cpu_s"] is not None else "")
            print(f"  {kind} repeat {repeat + 1} {name:<14} enqueue "
                  f"{run['enqueue_jobs_per_s']:7.1f} jobs/s; drain {run['jobs_per_s']:7.1f} "
                  f"jobs/s from start, {run['jobs_per_s_after_first']:7.1f} after first "
                  f"pickup; CPU s consumer {run['consumer_cpu_s']:.2f}{server_cpu} "
                  f"(load {run['load_avg']})", flush=True)
    results = {}
    for name in names:
        samples, base = runs[name], runs[baseline]
        m = {metric: median([r[metric] for r in samples])
             for metric in ("enqueue_jobs_per_s", "jobs_per_s", "jobs_per_s_after_first",
                            "consumer_cpu_s")}
        server_cpu = [r["server_cpu_s"] for r in samples if r["server_cpu_s"] is not None]
        m["server_cpu_s"] = median(server_cpu) if server_cpu else None
        m["cpu_ms_per_job"] = round(1000 * (m["consumer_cpu_s"] + (m["server_cpu_s"] or 0))
                                    / jobs, 3)
        for metric in ("enqueue_jobs_per_s", "jobs_per_s", "jobs_per_s_after_first"):
            m[f"paired_ratio_{metric}"] = round(median(
                [r[metric] / b[metric] for r, b in zip(samples, base, strict=True)]), 3)
        m["runs"] = samples
        results[name] = m
    print(f"\n{kind} jobs, {jobs} per drain, medians of {repeats}; ratios paired, to {baseline}")
    print(f"{'system':<14} {'enqueue/s':>9} {'ratio':>6} {'drain/s':>8} {'ratio':>6} "
          f"{'after 1st':>9} {'ratio':>6} {'CPU s consumer':>14} {'server':>7} {'ms/job':>7}")
    for name, m in results.items():
        print(f"{name:<14} {m['enqueue_jobs_per_s']:9.1f} "
              f"{m['paired_ratio_enqueue_jobs_per_s']:6.2f} {m['jobs_per_s']:8.1f} "
              f"{m['paired_ratio_jobs_per_s']:6.2f} {m['jobs_per_s_after_first']:9.1f} "
              f"{m['paired_ratio_jobs_per_s_after_first']:6.2f} {m['consumer_cpu_s']:14.2f} "
              + (f"{m['server_cpu_s']:7.2f}" if m["server_cpu_s"] is not None else f"{'—':>7}")
              + f" {m['cpu_ms_per_job']:7.2f}", flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=500, help="no-op jobs per drain")
    parser.add_argument("--pdf-jobs", type=int, default=24, help="PDF jobs per drain (0: skip)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=SYSTEMS)
    parser.add_argument("--timeout", type=float, default=600, help="seconds per drain")
    add_server_argument(parser)
    args = parser.parse_args(argv)
    exit_on_sigterm()
    names = tuple(args.systems)
    if BASELINE not in names:
        parser.error(f"--systems must include the baseline, {BASELINE}")
    if set(names) & {"procrastinate", "pgqueuer"}:
        check_peers()
    work = Path(tempfile.mkdtemp(prefix="qrq-pg-queues-"))
    work.chmod(0o755)
    report: dict = {"bench": "pg_queues", "cpus": os.cpu_count(), "jobs": args.jobs,
                    "pdf_jobs": args.pdf_jobs, "repeats": args.repeats,
                    "load_average": [load_average()]}
    try:
        with server(args.database_url, work) as (url, postmaster):
            report["server"] = server_settings(url)
            report["server_cpu_counted"] = postmaster is not None
            print(f"machine: {os.cpu_count()} CPUs, load average {load_average()}; server "
                  + ", ".join(f"{k}={v}" for k, v in report["server"].items())
                  + f"; {args.jobs} no-op jobs, {args.repeats} repeats", flush=True)
            systems = open_systems(names, work, url)
            try:
                report["noop"] = compare(systems, names, args.jobs, args.repeats, False,
                                         postmaster, args.timeout, BASELINE)
                qrq_pair = tuple(n for n in ("qrq-pg", "qrq-sqlite") if n in names)
                if args.pdf_jobs and len(qrq_pair) == 2:
                    report["pdf"] = compare(systems, qrq_pair, args.pdf_jobs, args.repeats,
                                            True, postmaster, args.timeout, "qrq-sqlite")
            finally:
                close_systems(systems)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report["load_average"].append(load_average())
    noop = report["noop"]
    if "qrq-pg" in noop:
        ratio = noop["qrq-pg"]["paired_ratio_jobs_per_s_after_first"]
        report["target_met"] = ratio >= 1.0
        print(f"\ntarget: qrq-pg drain ≥ procrastinate's: "
              f"{'met' if ratio >= 1 else 'NOT met'} (paired ratio after the first pickup "
              f"{ratio:.2f}, from start {noop['qrq-pg']['paired_ratio_jobs_per_s']:.2f}); "
              f"load average {report['load_average'][0]} -> {report['load_average'][1]}")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
