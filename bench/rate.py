"""What a consumer costs below its capacity: CPU per job at a fixed arrival rate, and idle.

Each repeat starts four ``huey_consumer``s side by side, at the same moment: ``qrq``
(``huey_app.huey`` with the no-op job of bench/_noop_tasks.py, the full stack) and
``stock`` (``huey.SqliteHuey``'s storage with ``synchronous=NORMAL``, as qrq's consumer
commits: bench/_drain_apps.py, ``stock-normal``), each with ``-w 1`` and ``-w 4``, each
``-k process`` on a fresh SQLite file of its own, all with the same fixed polling
(``-d 0.05 -m 0.05 -b 1.0``: qrq's shipped ``QRQ_POLL_INTERVAL``, so they answer as fast;
``-n``: no periodic tasks). Then, for all four at once:

* ``--idle`` seconds idle: each consumer's CPU % (its process group: the consumer, its
  scheduler and its workers);
* ``--warm`` no-op jobs at ``--rate`` jobs/s, not measured: a worker's first jobs pay its
  one-time start (its connection, the pages it copies from the parent it forked from,
  the interpreter's warm-up), which a consumer that runs for days pays once, and which
  four workers pay four times; ``--warm 0`` puts it back into the figure;
* ``--seconds`` of no-op jobs at ``--rate`` jobs/s: each consumer's CPU seconds per job,
  from the first arrival until it has run the last.

Each queue's jobs are enqueued by a process of its own, a durable commit each, as the web
app's. The four run side by side because this machine is shared: one consumer's CPU per
job moves by ±15% from one half-minute to the next, far more than what is measured here,
while consumers running at the same moment share the machine's moment too, and their
ratio moves by a few percent (2026-12-05: W4/W1 1.02-1.11x side by side, 0.88-1.31x one
after the other). At 50 jobs/s each they use a few percent of a core each, so they hardly
compete. Figures are medians over repeats; ratios are paired (the median over repeats of
the ratio within a repeat). The issue's point: 4 workers cost no more CPU per job than 1.

Run: ``flock /tmp/qrq-bench.lock .venv/bin/python bench/rate.py`` (5 repeats, ~4 minutes),
``--repeats 1 --seconds 8 --idle 4`` for a quick look. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _proc import exit_on_sigterm, group_pids
from _support import PYTHON, REPO, env_for, median, start, stop, wait_for_text
from drain import BENCH, HUEY_CONSUMER, QRQ_ENV, import_qrq

VARIANTS = ("qrq", "stock")
POLL_FLAGS = ["-d", "0.05", "-m", "0.05", "-b", "1.0", "-n"]
SETTLE = 2.0  # seconds after "consumer started" before the idle window (forks, imports)
DRAIN_DEADLINE = 120.0  # seconds after the last arrival for the last job to have run


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


def feed(variant: str, directory: Path) -> None:
    """The enqueuing process of one queue (``--feed``): "ready" once the queue exists,
    then for each command on stdin one JSON line with the CPU seconds of the consumer
    (process group PGID) over it. ``PGID idle S``: S seconds idle; ``PGID jobs N RATE``:
    N jobs at RATE jobs/s, until the consumer has run the last."""
    enqueue = enqueuer(variant, directory)
    conn = sqlite3.connect(directory / "queue.db", timeout=30)
    print("ready", flush=True)

    def pending() -> int:
        left = conn.execute("select count(*) from task").fetchone()[0]
        if variant == "qrq":
            left += conn.execute("select count(*) from job where status != 'finished'"
                                 ).fetchone()[0]
        return left

    for line in sys.stdin:
        pgid, command, *numbers = line.split()
        pgid = int(pgid)
        cpu, began = group_cpu_seconds(pgid), time.perf_counter()
        if command == "idle":
            time.sleep(float(numbers[0]))
            lag = 0.0
        else:
            jobs, rate = int(numbers[0]), float(numbers[1])
            for n in range(jobs):
                delay = began + n / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                enqueue()
            last = time.perf_counter()
            while pending():
                if time.perf_counter() - last > DRAIN_DEADLINE:
                    raise RuntimeError(f"{variant}: jobs left {DRAIN_DEADLINE:g} s after "
                                       f"the last arrival")
                time.sleep(0.01)
            lag = time.perf_counter() - last
        print(json.dumps({"cpu_s": group_cpu_seconds(pgid) - cpu,
                          "seconds": time.perf_counter() - began, "lag_s": lag}), flush=True)


class Side:
    """One consumer of a repeat and the process that feeds its queue."""

    def __init__(self, variant: str, workers: int, directory: Path):
        self.variant, self.workers = variant, workers
        directory.mkdir(parents=True)
        env = env_for(directory, PYTHONPATH=f"{BENCH}{os.pathsep}{REPO}",
                      BENCH_DRAIN_VARIANT="stock-normal",
                      BENCH_DRAIN_DB=str(directory / "queue.db"))
        if variant == "qrq":
            env.update(QRQ_ENV)
        app = "huey_app.huey" if variant == "qrq" else "_drain_apps.huey"
        self.log = directory / "consumer.log"
        # The queue first (the feeder creates it, as the web app would), then its consumer.
        self.feeder = subprocess.Popen(
            [PYTHON, __file__, "--feed", variant, str(directory)], cwd=REPO, env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if self.feeder.stdout.readline().strip() != "ready":
            raise RuntimeError(f"{variant}: the process that enqueues did not start")
        self.consumer = start([HUEY_CONSUMER, app, "-w", str(workers), "-k", "process",
                               *POLL_FLAGS], self.log, cwd=REPO, env=env)
        self.pgid = self.consumer.pid

    def send(self, command: str) -> None:
        self.feeder.stdin.write(f"{self.pgid} {command}\n")
        self.feeder.stdin.flush()

    def result(self) -> dict:
        line = self.feeder.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.variant} -w {self.workers}: its feeder stopped; "
                               f"see {self.log}")
        return json.loads(line)

    def close(self) -> str:
        if self.feeder.stdin:
            self.feeder.stdin.close()
        try:
            self.feeder.wait(10)
        except subprocess.TimeoutExpired:
            self.feeder.kill()
        stop(self.consumer)
        return self.log.read_text(errors="replace")


def run_repeat(directory: Path, args) -> dict:
    """One repeat: every variant and worker count side by side."""
    sides = [Side(variant, workers, directory / f"{variant}-w{workers}")
             for variant in VARIANTS for workers in args.workers]
    runs = {}
    try:
        for side in sides:
            wait_for_text(side.log, "consumer started", side.consumer, 60)
        time.sleep(SETTLE)

        def together(command: str) -> list[dict]:
            for side in sides:
                side.send(command)
            return [side.result() for side in sides]

        idle = together(f"idle {args.idle}")
        if args.warm:
            together(f"jobs {args.warm} {args.rate}")
        jobs = round(args.rate * args.seconds)
        busy = together(f"jobs {jobs} {args.rate}")
        for side, quiet, run in zip(sides, idle, busy, strict=True):
            runs[(side.variant, side.workers)] = {
                "idle_cpu_pct": round(quiet["cpu_s"] / quiet["seconds"] * 100, 2),
                "cpu_ms_per_job": round(run["cpu_s"] / jobs * 1000, 3), "jobs": jobs,
                "drained_s_after_last": round(run["lag_s"], 2)}
    finally:
        for side in sides:
            output = side.close()
            if (side.variant, side.workers) in runs:
                runs[(side.variant, side.workers)]["tracebacks"] = output.count("Traceback")
    load = round(os.getloadavg()[0], 2)
    for run in runs.values():
        run["load_avg"] = load
    return runs


def main(argv: list[str] | None = None) -> int:
    if argv is None and sys.argv[1:2] == ["--feed"]:
        feed(sys.argv[2], Path(sys.argv[3]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=50.0, help="jobs per second, each queue")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds of arrivals")
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of idle measured")
    parser.add_argument("--warm", type=int, default=200,
                        help="jobs run before the measured ones, not measured")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 4])
    args = parser.parse_args(argv)
    exit_on_sigterm()
    root = Path(tempfile.mkdtemp(prefix="qrq-bench-rate-"))
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; "
          f"side by side, each {args.rate:g} jobs/s for {args.seconds:g} s after "
          f"{args.warm} unmeasured, idle {args.idle:g} s, consumer flags "
          f"{' '.join(POLL_FLAGS)}", flush=True)
    runs: dict = collections.defaultdict(list)
    try:
        for repeat in range(args.repeats):
            for key, run in run_repeat(root / f"repeat-{repeat}", args).items():
                runs[key].append(run)
                print(f"  repeat {repeat + 1} {key[0]:<6} -w {key[1]}: idle "
                      f"{run['idle_cpu_pct']:5.2f}% CPU, {run['cpu_ms_per_job']:.3f} CPU ms/job "
                      f"at {args.rate:g}/s (drained {run['drained_s_after_last']:.2f} s after "
                      f"the last arrival; load {run['load_avg']})", flush=True)
            shutil.rmtree(root / f"repeat-{repeat}", ignore_errors=True)
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
        ratios[f"{variant}_w{high}_over_w{low}"]["repeats"] = [
            round(x["cpu_ms_per_job"] / y["cpu_ms_per_job"], 3)
            for x, y in zip(runs[(variant, high)], runs[(variant, low)], strict=True)]
    for workers in args.workers:
        ratios[f"qrq_over_stock_w{workers}"] = {
            k: paired(("qrq", workers), ("stock", workers), k)
            for k in ("cpu_ms_per_job", "idle_cpu_pct")}
    for name, r in ratios.items():
        print(f"{name:<22} CPU/job {r['cpu_ms_per_job']:.2f}x, idle CPU {r['idle_cpu_pct']:.2f}x"
              + (f" (repeats {', '.join(f'{x:.2f}' for x in r['repeats'])})"
                 if "repeats" in r else ""))
    print(f"load average at the end: {'/'.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(json.dumps({"bench": "rate", "cpus": os.cpu_count(), "rate": args.rate,
                      "seconds": args.seconds, "idle_s": args.idle, "warm_jobs": args.warm,
                      "repeats": args.repeats, "side_by_side": True,
                      "consumer_flags": POLL_FLAGS, "results": results, "paired": ratios,
                      "load_avg_at_end": os.getloadavg()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
