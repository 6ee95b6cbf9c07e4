"""Pickup latency (enqueue -> running) of an idle consumer: qrq's shipped settings vs stock huey.

Two consumers run side by side, each on its own SQLite file in a temporary directory:

* qrq: ``qrq --data-dir TMP worker`` with qrq's shipped settings (4 process workers, one of
  which polls every ``QRQ_POLL_INTERVAL`` = 0.05 s while the others sleep: the pickup of
  one worker polling that often, at its idle cost). The job is the real PDF task with
  ``copies=1`` (``qrq.queue.submit``), on a template made by ``qrq init --demo``. Latency is
  the job record's ``started_at`` (stamped by the dequeue that leases it) minus its
  ``created_at`` (stamped just before the enqueue).
* stock: a plain ``huey.SqliteHuey`` with a no-op task (``bench/stock_huey_app.py``) under
  ``huey_consumer`` with its default polling (initial delay 0.1 s, backoff 1.15, max delay
  10 s) and ``-w 4`` threads, the same worker count as qrq's (huey's own default is 1).
  Latency is the time the task body read minus the time just before the enqueue.

Both consumers first sit idle for ``--idle`` seconds (the issue's case: "a consumer that has
sat idle for a minute"). Then jobs are enqueued one at a time, alternating qrq and stock,
``--spacing`` seconds apart (random within the range, so the enqueues do not lock to
either poll period). Each job is awaited before the next, so every pickup meets an idle
consumer. The first pickup after the idle period is reported on its own: it is the only one
that meets a stock worker backed off to 10 s, since huey resets a worker's delay when it runs
a task; qrq's poll interval does not grow, so for qrq every sample is the idle case.

Run: ``/work/venv/bin/python bench/pickup.py`` (idle 60 s), or quickly
``/work/venv/bin/python bench/pickup.py --idle 5 --samples 30``. The last line of output is one
JSON object with every figure.
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

from _support import (
    PYTHON,
    REPO,
    env_for,
    load_average,
    median,
    percentile,
    qrq_cli,
    start,
    stop,
    wait_for_text,
)

TARGET_P99_MS = 100.0
BENCH = Path(__file__).resolve().parent
HUEY_CONSUMER = str(Path(sys.executable).parent / "huey_consumer")


def pickup_qrq(submit, task, storage, jobs, template_id: int, timeout: float = 60) -> float:
    """Enqueue one PDF job and wait for it to end; its pickup latency in ms."""
    job_id = submit(task, template_id, {"copies": 1}, owner_id=None)
    deadline = time.monotonic() + timeout
    while True:
        job = jobs.get(storage, job_id)
        if job["status"] in jobs.ENDED:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"qrq job {job_id} still {job['status']} after {timeout:g}s")
        time.sleep(0.005)
    if job["status"] != "finished" or job["started_at"] is None:
        raise RuntimeError(f"qrq job {job_id} {job['status']}: {job['error']}")
    return (job["started_at"] - job["created_at"]) * 1000


def pickup_stock(stamp, timeout: float = 60) -> float:
    """Enqueue one no-op stock-huey task and wait for its start time; latency in ms."""
    enqueued = time.time()
    started = stamp().get(blocking=True, timeout=timeout, backoff=1.0, max_delay=0.005)
    return (started - enqueued) * 1000


def summarize(values: list[float]) -> dict:
    return {"p50_ms": round(percentile(values, 50), 2), "p99_ms": round(percentile(values, 99), 2),
            "median_ms": round(median(values), 2), "min_ms": round(min(values), 2),
            "max_ms": round(max(values), 2), "n": len(values)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--idle", type=float, default=60.0,
                        help="seconds both consumers sit idle before the first job")
    parser.add_argument("--samples", type=int, default=30, help="jobs per consumer")
    parser.add_argument("--spacing", type=float, nargs=2, default=(1.0, 2.0),
                        metavar=("MIN", "MAX"), help="seconds between jobs (uniform)")
    parser.add_argument("--stock-workers", type=int, default=4,
                        help="huey_consumer -w (qrq worker runs 4)")
    parser.add_argument("--keep", action="store_true", help="keep the data dirs and logs")
    args = parser.parse_args(argv)

    data_dir = Path(tempfile.mkdtemp(prefix="qrq-bench-pickup-"))
    qrq_dir, stock_dir = data_dir / "qrq", data_dir / "stock"
    stock_dir.mkdir(parents=True)
    stock_db = stock_dir / "stock.db"
    # Both huey instances are built at import, from the environment.
    os.environ["QRQ_DATA_DIR"] = str(qrq_dir)
    os.environ["BENCH_STOCK_DB"] = str(stock_db)
    qrq_consumer = stock_consumer = None
    samples: dict[str, list[float]] = {"qrq": [], "stock": []}
    try:
        qrq_cli(qrq_dir, "init", "--demo")
        sys.path.insert(0, str(REPO))
        import stock_huey_app

        import huey_app
        from qrq.queue import jobs, submit
        from tasks.pdf import generate_qr_pdf

        storage = huey_app.huey.storage
        template_id = 1  # the demo's one-code A4 table tent

        qrq_consumer = start([PYTHON, "-m", "qrq", "--data-dir", str(qrq_dir), "worker"],
                             data_dir / "qrq-worker.out", cwd=REPO, env=env_for(qrq_dir))
        stock_log = stock_dir / "consumer.log"
        stock_consumer = start([HUEY_CONSUMER, "stock_huey_app.huey",
                                "-w", str(args.stock_workers)], stock_log, cwd=stock_dir,
                               env={**env_for(qrq_dir), "PYTHONPATH": str(BENCH),
                                    "BENCH_STOCK_DB": str(stock_db)})
        wait_for_text(qrq_dir / "logs" / "consumer.log", "consumer started", qrq_consumer, 30)
        wait_for_text(stock_log, "consumer started", stock_consumer, 30)
        load_start = load_average()
        print(f"machine: {os.cpu_count()} CPUs, load average {load_start}; "
              f"qrq worker (shipped settings: 4 process workers, one polling every "
              f"0.05 s) vs huey_consumer -w {args.stock_workers} (stock polling "
              f"0.1 s x1.15 up to 10 s); idle {args.idle:g} s, then {args.samples} jobs each, "
              f"{args.spacing[0]:g}-{args.spacing[1]:g} s apart", flush=True)
        time.sleep(args.idle)

        rng = random.Random(0)
        for i in range(args.samples):
            order = ("qrq", "stock") if i % 2 == 0 else ("stock", "qrq")
            for side in order:
                if side == "qrq":
                    ms = pickup_qrq(submit, generate_qr_pdf, storage, jobs, template_id)
                else:
                    ms = pickup_stock(stock_huey_app.stamp)
                samples[side].append(ms)
                if i == 0:
                    print(f"  first pickup after {args.idle:g} s idle: {side} {ms:.1f} ms",
                          flush=True)
                time.sleep(0.2)
            time.sleep(rng.uniform(*args.spacing))
        for proc in (qrq_consumer, stock_consumer):
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
    finally:
        stop(qrq_consumer, grace=40)
        stop(stock_consumer, grace=40)
        if args.keep or sys.exc_info()[0] is not None:
            print(f"kept {data_dir} (logs inside)")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)

    load_end = load_average()
    # In the first round qrq went first, so the stock sample waited ~0.2 s longer; both are
    # still "first pickup after the idle period".
    first = {side: values[0] for side, values in samples.items()}
    stats = {side: summarize(values) for side, values in samples.items()}
    print(f"\n{'consumer':<8} {'p50 ms':>9} {'p99 ms':>9} {'min ms':>9} {'max ms':>9} "
          f"{'first after idle':>17}")
    for side in ("qrq", "stock"):
        s = stats[side]
        print(f"{side:<8} {s['p50_ms']:9.1f} {s['p99_ms']:9.1f} {s['min_ms']:9.1f} "
              f"{s['max_ms']:9.1f} {first[side]:14.1f} ms")
    ratios = {q: stats["stock"][f"{q}_ms"] / stats["qrq"][f"{q}_ms"] for q in ("p50", "p99")}
    ratios["first"] = first["stock"] / first["qrq"]
    met = stats["qrq"]["p99_ms"] < TARGET_P99_MS
    print(f"stock/qrq: p50 {ratios['p50']:.1f}x, p99 {ratios['p99']:.1f}x, first pickup after "
          f"idle {ratios['first']:.1f}x")
    print(f"load average at the end: {load_end}")
    print(f"target: qrq p99 < {TARGET_P99_MS:g} ms: " + ("met" if met else "NOT met"))
    summary = {
        "bench": "pickup", "cpus": os.cpu_count(), "load_average": [load_start, load_end],
        "idle_s": args.idle,
        "samples": args.samples, "spacing_s": list(args.spacing),
        "stock_workers": args.stock_workers,
        "qrq": stats["qrq"], "stock": stats["stock"],
        "first_after_idle_ms": {k: round(v, 2) for k, v in first.items()},
        "ratio_stock_over_qrq": {k: round(v, 2) for k, v in ratios.items()},
        "target_p99_ms": TARGET_P99_MS, "target_met": met,
        "qrq_ms": [round(v, 2) for v in samples["qrq"]],
        "stock_ms": [round(v, 2) for v in samples["stock"]],
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
