"""What a consumer costs below its capacity: CPU per job at a fixed arrival rate, and idle.

Each run starts a fresh ``huey_consumer`` on a fresh SQLite file, with ``-w W -k process``
and the same fixed polling for both variants (``-d 0.05 -m 0.05 -b 1.0``: qrq's shipped
``QRQ_POLL_INTERVAL``, so the two answer as fast; ``-n``: no periodic tasks), then

* lets it sit idle for ``--idle`` seconds and reports its CPU % (the consumer's process
  group: the consumer, its scheduler and its workers);
* enqueues no-op jobs from this process at ``--rate`` jobs/s for ``--seconds`` seconds
  (a durable commit each, as the web app's), waits until the last one has run, and
  reports the consumer's CPU seconds per job over that span.

Variants: ``qrq`` (``huey_app.huey`` with the no-op job of bench/_noop_tasks.py, the full
stack) and ``stock`` (``huey.SqliteHuey``'s storage with ``synchronous=NORMAL``, as qrq's
consumer commits: bench/_drain_apps.py, ``stock-normal``). Workers 1 and 4, variants and
worker counts alternating between repeats; figures are medians, ratios paired (median
over repeats of the ratio within a repeat). The issue's point: 4 workers cost no more CPU
per job than 1.

Run: ``flock /tmp/qrq-bench.lock .venv/bin/python bench/rate.py`` (2 repeats, ~5 minutes),
``--repeats 1 --seconds 10 --idle 5`` for a quick look. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from _proc import exit_on_sigterm, group_pids
from _support import REPO, env_for, median, start, stop, wait_for_text
from drain import BENCH, HUEY_CONSUMER, QRQ_ENV, import_qrq

VARIANTS = ("qrq", "stock")
POLL_FLAGS = ["-d", "0.05", "-m", "0.05", "-b", "1.0", "-n"]
SETTLE = 2.0  # seconds after "consumer started" before the idle window (forks, imports)


def group_cpu_seconds(pgid: int) -> float:
    """CPU seconds of process group *pgid*'s live threads, to the nanosecond
    (``/proc/PID/task/TID/schedstat``; /proc's utime and stime count 10 ms ticks, too
    coarse for an idle consumer). A consumer's threads live as long as it does."""
    total = 0
    for pid in group_pids(pgid):
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                total += int((task / "schedstat").read_text().split()[0])
            except (FileNotFoundError, ProcessLookupError, IndexError):
                pass
    return total / 1e9


def enqueuer(variant: str, directory: Path):
    """A function that enqueues one no-op job of *variant* into *directory*'s queue."""
    if variant == "qrq":
        huey, noop, submit, load_settings = import_qrq(directory)
        huey.init(load_settings(data_dir=str(directory)))
        return lambda: submit(noop, owner_id=None)
    from _drain_apps import build

    _, noop = build("stock", str(directory / "queue.db"))  # durable enqueues
    return noop


def run_once(variant: str, workers: int, directory: Path, args) -> dict:
    directory.mkdir(parents=True)
    enqueue = enqueuer(variant, directory)
    db = directory / "queue.db"
    env = env_for(directory, PYTHONPATH=f"{BENCH}{os.pathsep}{REPO}",
                  BENCH_DRAIN_VARIANT="stock-normal", BENCH_DRAIN_DB=str(db))
    if variant == "qrq":
        env.update(QRQ_ENV)
    app = "huey_app.huey" if variant == "qrq" else "_drain_apps.huey"
    log = directory / "consumer.log"
    proc = start([HUEY_CONSUMER, app, "-w", str(workers), "-k", "process", *POLL_FLAGS],
                 log, cwd=REPO, env=env)
    conn = sqlite3.connect(db, timeout=30)
    try:
        wait_for_text(log, "consumer started", proc, 60)
        time.sleep(SETTLE)
        cpu, began = group_cpu_seconds(proc.pid), time.perf_counter()
        time.sleep(args.idle)
        idle_pct = (group_cpu_seconds(proc.pid) - cpu) / (time.perf_counter() - began) * 100

        jobs = round(args.rate * args.seconds)
        cpu, began = group_cpu_seconds(proc.pid), time.perf_counter()
        for n in range(jobs):
            delay = began + n / args.rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            enqueue()
        deadline = time.perf_counter() + 120
        while conn.execute("select count(*) from task").fetchone()[0] or (
                variant == "qrq" and conn.execute(
                    "select count(*) from job where status != 'finished'").fetchone()[0]):
            if time.perf_counter() > deadline or proc.poll() is not None:
                raise RuntimeError(f"{variant} -w {workers}: jobs left; see {log}")
            time.sleep(0.01)
        cpu_per_job = (group_cpu_seconds(proc.pid) - cpu) / jobs
        lag = time.perf_counter() - began - args.seconds
    finally:
        stop(proc)
        conn.close()
    output = log.read_text(errors="replace")
    return {"idle_cpu_pct": round(idle_pct, 2), "cpu_ms_per_job": round(cpu_per_job * 1000, 3),
            "jobs": jobs, "drained_s_after_last": round(lag, 2),
            "tracebacks": output.count("Traceback"), "load_avg": round(os.getloadavg()[0], 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=50.0, help="jobs per second")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds of arrivals")
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of idle measured")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 4])
    args = parser.parse_args(argv)
    exit_on_sigterm()
    root = Path(tempfile.mkdtemp(prefix="qrq-bench-rate-"))
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; "
          f"{args.rate:g} jobs/s for {args.seconds:g} s, idle {args.idle:g} s, "
          f"consumer flags {' '.join(POLL_FLAGS)}", flush=True)
    runs: dict = collections.defaultdict(list)
    n = 0
    try:
        for repeat in range(args.repeats):
            settings = [(v, w) for w in args.workers for v in VARIANTS]
            for variant, workers in settings if repeat % 2 == 0 else settings[::-1]:
                n += 1
                run = run_once(variant, workers, root / f"run-{n}", args)
                runs[(variant, workers)].append(run)
                print(f"  repeat {repeat + 1} {variant:<6} -w {workers}: idle "
                      f"{run['idle_cpu_pct']:5.2f}% CPU, {run['cpu_ms_per_job']:.3f} CPU ms/job "
                      f"at {args.rate:g}/s (drained {run['drained_s_after_last']:.2f} s after "
                      f"the last arrival; load {run['load_avg']})", flush=True)
                shutil.rmtree(root / f"run-{n}", ignore_errors=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    def paired(a: tuple, b: tuple, metric: str) -> float:
        return round(median([x[metric] / y[metric] for x, y in
                             zip(runs[a], runs[b], strict=True) if y[metric]]), 3)

    results: dict = {}
    print(f"\nmedians of {args.repeats}; paired ratios: median over repeats")
    print(f"{'variant':<7} {'workers':>7} {'idle CPU %':>10} {'CPU ms/job':>11}")
    for (variant, workers), samples in sorted(runs.items()):
        m = {k: round(median([r[k] for r in samples]), 3)
             for k in ("idle_cpu_pct", "cpu_ms_per_job")}
        results[f"{variant}-w{workers}"] = {**m, "runs": samples}
        print(f"{variant:<7} {workers:>7} {m['idle_cpu_pct']:10.2f} {m['cpu_ms_per_job']:11.3f}")
    ratios = {}
    low, high = min(args.workers), max(args.workers)
    for variant in VARIANTS:
        ratios[f"{variant}_w{high}_over_w{low}"] = {
            k: paired((variant, high), (variant, low), k)
            for k in ("cpu_ms_per_job", "idle_cpu_pct")}
    for workers in args.workers:
        ratios[f"qrq_over_stock_w{workers}"] = {
            k: paired(("qrq", workers), ("stock", workers), k)
            for k in ("cpu_ms_per_job", "idle_cpu_pct")}
    for name, r in ratios.items():
        print(f"{name:<22} CPU/job {r['cpu_ms_per_job']:.2f}x, idle CPU {r['idle_cpu_pct']:.2f}x")
    print(f"load average at the end: {'/'.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(json.dumps({"bench": "rate", "cpus": os.cpu_count(), "rate": args.rate,
                      "seconds": args.seconds, "idle_s": args.idle, "repeats": args.repeats,
                      "consumer_flags": POLL_FLAGS, "results": results, "paired": ratios,
                      "load_avg_at_end": os.getloadavg()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
