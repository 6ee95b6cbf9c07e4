"""Drain throughput of no-op jobs through ``huey_consumer``: qrq's storage next to stock huey.

Variants, each with a no-op task and the same consumer flags, on huey's default SQLite
settings (WAL, synchronous FULL: every commit syncs the WAL) unless said otherwise:

* ``stock``: ``huey.SqliteHuey`` (bench/_drain_apps.py), huey's own storage: dequeue deletes
  the task row before the task runs.
* ``stock-normal``: the same storage with ``synchronous=NORMAL``, which qrq's consumer
  (``QrqConsumer``) sets for its own connections: the like-for-like baseline for ``qrq``.
* ``plain``: ``huey.Huey(storage_class=qrq.queue.sqlite_storage.LeasedSqliteStorage)``:
  qrq's leased storage alone (dequeue leases the row; the worker's next dequeue deletes it
  in the same transaction). The issue's target is about this one: at least 80% of stock's
  throughput.
* ``plain-normal``: the same with ``synchronous=NORMAL``, compared with ``stock-normal``:
  without a sync per commit the disk's latency (noisy on a shared machine) drops out and
  what the leases cost in CPU and locking shows.
* ``qrq``: the full stack, ``huey_app.huey`` (QrqHuey, signed payloads, job records written
  at enqueue, at lease and at completion; consumer commits with ``synchronous=NORMAL``)
  with a no-op ``job_task`` loaded through ``QRQ_TASK_MODULES=_noop_tasks``
  (bench/_noop_tasks.py). Its job type is not capped, but
  the shipped ``QRQ_TYPE_CAPS`` still make every dequeue count the leased rows per type.
* ``qrq-nocaps``: the same with ``QRQ_TYPE_CAPS=""`` (no per-type caps), to show what the
  cap check costs.

For each variant, N jobs are enqueued once into a fresh SQLite file (the enqueue rate is
reported too); each run copies that file into a fresh directory and starts
``huey_consumer <app> -w W -k TYPE -d 0.01 -m 0.01 -b 1.0`` on it. The clock starts just
before the consumer is started and stops when the bench process (polling the file every
10 ms on its own connection) sees no task row left, neither queued nor leased, and, for
qrq, every job record ``finished``. "From start" throughput includes the consumer's start-up
(imports, forking the workers); "from first pickup" starts the clock at the first poll that
sees a row gone. CPU ms/job is the consumer's process group's CPU time from the first
pickup to the end, per job (less sensitive to other load on the machine than wall time).
Every run counts the no-op's executions in the consumer's log (N expected; more means some
job ran twice), and "database is locked" and tracebacks (reported; they should be 0).

Variants alternate order between repeats; figures are medians over repeats. Before the
consumer runs, an in-process profile executes M jobs of each variant in one thread
(``dequeue`` + ``execute`` through the real storage) with SQLite's trace callback on, and
counts write transactions (``BEGIN``), statements, and microseconds per job.

Run: ``/work/venv/bin/python bench/drain.py`` (5,000 jobs, 3 repeats, 1 and 4 process
workers), e.g. ``--worker-types process thread`` to add thread workers, ``--jobs 1000
--repeats 1`` for a quick look. The last line of output is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path

from _proc import exit_on_sigterm, group_cpu_seconds
from _support import REPO, env_for, median, start, stop
from wal_frames import pages_per_job

BENCH = Path(__file__).resolve().parent
HUEY_CONSUMER = str(Path(sys.executable).parent / "huey_consumer")
VARIANTS = ("stock", "stock-normal", "plain", "plain-normal", "qrq", "qrq-nocaps")
NO_CAPS = {"QRQ_TYPE_CAPS": ""}
TARGET_RATIO = 0.8
POLL_FLAGS = ["-d", "0.01", "-m", "0.01", "-b", "1.0"]
QRQ_ENV = {"QRQ_TASK_MODULES": "_noop_tasks"}


def import_qrq(data_dir: Path):
    """Import huey_app (QrqHuey plus the no-op task) pointed at *data_dir*."""
    os.environ["QRQ_DATA_DIR"] = str(data_dir)
    os.environ.update(QRQ_ENV)
    for path in (str(REPO), str(BENCH)):
        if path not in sys.path:
            sys.path.insert(0, path)
    import _noop_tasks

    import huey_app
    from qrq.config import load_settings
    from qrq.queue import submit

    return huey_app.huey, _noop_tasks.noop, submit, load_settings


def enqueue_template(variant: str, directory: Path, jobs: int, threads: int = 1) -> float:
    """Fill a fresh queue file in *directory* with *jobs* no-op jobs from *threads*
    threads (each enqueue its own durable commit, or a share of a group commit);
    seconds taken."""
    directory.mkdir(parents=True)
    if variant.startswith("qrq"):
        huey, noop, submit, load_settings = import_qrq(directory)
        settings = load_settings(data_dir=str(directory))
        huey.init(settings)
        # As `qrq init` leaves it: the minute's alert check reads the app database, and
        # without one refuses to make it anew beside a queue that holds jobs (a traceback
        # in every drain's log).
        from qrq.appdb.db import open_app_db
        open_app_db(settings).close()

        def one() -> None:
            submit(noop, owner_id=None)
    else:
        from _drain_apps import build

        huey, noop = build(variant, str(directory / "queue.db"))
        one = noop
    share = [jobs // threads + (i < jobs % threads) for i in range(threads)]
    workers = [threading.Thread(target=lambda n=n: [one() for _ in range(n)])
               for n in share]
    began = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    took = time.perf_counter() - began
    huey.storage.close()  # the last connection checkpoints the WAL into the file
    if hasattr(huey.storage, "_conns"):
        huey.storage._conns = threading.local()  # the threads' connections go with them
    return took


def enqueue_rates(args, root: Path) -> dict:
    """Enqueue jobs/s of stock and qrq with each thread count, alternating; medians."""
    runs: dict = collections.defaultdict(list)
    for repeat in range(args.repeats):
        for threads in args.enqueue_threads:
            for variant in ("stock", "qrq") if repeat % 2 == 0 else ("qrq", "stock"):
                took = enqueue_template(variant, root / f"enqueue-{variant}-{threads}-{repeat}",
                                        args.jobs, threads)
                runs[(threads, variant)].append(args.jobs / took)
    results = {}
    print(f"\nenqueue, {args.jobs} jobs (durable: synchronous FULL), medians of "
          f"{args.repeats}; paired = median of each repeat's qrq/stock")
    for threads in args.enqueue_threads:
        stock, qrq = runs[(threads, "stock")], runs[(threads, "qrq")]
        paired = median([q / s for q, s in zip(qrq, stock, strict=True)])
        results[threads] = {"stock": round(median(stock), 1), "qrq": round(median(qrq), 1),
                            "paired_ratio": round(paired, 3)}
        print(f"  {threads} thread(s): stock {median(stock):8.1f} jobs/s, qrq "
              f"{median(qrq):8.1f} jobs/s, qrq/stock {paired:.2f}", flush=True)
    return results


def consumer_command(variant: str, workers: int, worker_type: str) -> list[str]:
    app = "huey_app.huey" if variant.startswith("qrq") else "_drain_apps.huey"
    return [HUEY_CONSUMER, app, "-w", str(workers), "-k", worker_type, *POLL_FLAGS]


def drain_once(variant: str, template: Path, run_dir: Path, jobs: int, workers: int,
               worker_type: str, timeout: float) -> dict:
    """Copy the template, start a consumer on it, and time the drain."""
    shutil.copytree(template, run_dir)
    db = run_dir / "queue.db"
    env = env_for(run_dir, PYTHONPATH=f"{BENCH}{os.pathsep}{REPO}",
                  BENCH_DRAIN_VARIANT=variant, BENCH_DRAIN_DB=str(db))
    if variant.startswith("qrq"):
        env.update(QRQ_ENV)
    if variant == "qrq-nocaps":
        env.update(NO_CAPS)
    log = run_dir / "consumer.log"
    conn = sqlite3.connect(db, timeout=30)
    check_jobs = variant.startswith("qrq")
    proc = None
    try:
        began = time.perf_counter()
        proc = start(consumer_command(variant, workers, worker_type), log, cwd=REPO, env=env)
        first = cpu_first = None
        deadline = began + timeout
        wal, wal_max = Path(f"{db}-wal"), 0
        while True:
            left = conn.execute("select count(*) from task").fetchone()[0]
            now = time.perf_counter()
            with contextlib.suppress(FileNotFoundError):
                wal_max = max(wal_max, wal.stat().st_size)
            if first is None and left < jobs:
                first, cpu_first = now, group_cpu_seconds(proc.pid)
            if left == 0 and (not check_jobs or conn.execute(
                    "select count(*) from job where status != 'finished'").fetchone()[0] == 0):
                ended = now
                cpu_end = group_cpu_seconds(proc.pid)
                break
            if proc.poll() is not None:
                raise RuntimeError(f"{variant} consumer exited with {proc.returncode}; "
                                   f"see {log}")
            if now > deadline:
                raise RuntimeError(f"{variant}: {left} rows left after {timeout:g}s; see {log}")
            time.sleep(0.01)
        # Idle now: how far the WAL shrinks back within a few seconds.
        settle = time.perf_counter() + 3
        while time.perf_counter() < settle and wal.exists() and wal.stat().st_size > 0:
            time.sleep(0.05)
        wal_after = wal.stat().st_size if wal.exists() else 0
    finally:
        stop(proc)
        conn.close()
    output = log.read_text(errors="replace")
    # Count the no-op's runs only: qrq's stack also has periodic tasks (alerts, retention).
    executed = sum(1 for line in output.splitlines()
                   if " executed in " in line and "noop" in line)
    if executed != jobs:
        # More than N means some job ran twice (e.g. a lease its worker lost track of ran
        # out and the job ran again); fewer means jobs were lost. Both are reported.
        print(f"WARNING {variant}: the consumer logged {executed} executions of {jobs} jobs",
              flush=True)
    # Reported, not fatal: a traceback from another task (e.g. a periodic one) must not
    # throw away the whole run, but it must show.
    problems = {bad: output.count(bad) for bad in ("database is locked", "Traceback")}
    for bad, count in problems.items():
        if count:
            at = output.index(bad)
            print(f"WARNING {variant}: {count} x {bad!r} in the consumer's log; the first:\n"
                  f"{output[max(0, at - 300):at + 2500]}", flush=True)
    total, after_first = ended - began, ended - first
    return {"seconds": round(total, 3), "startup_s": round(first - began, 3),
            "jobs_per_s": round(jobs / total, 1),
            "jobs_per_s_after_first": round(jobs / after_first, 1),
            "cpu_ms_per_job": round((cpu_end - cpu_first) * 1000 / jobs, 3),
            "wal_max_mb": round(wal_max / 2**20, 1), "wal_after_mb": round(wal_after / 2**20, 1),
            "executions": executed, "locked_in_log": problems["database is locked"],
            "tracebacks_in_log": problems["Traceback"]}


def profile_once(variant: str, jobs: int, directory: Path) -> dict:
    """Run *jobs* no-op jobs of *variant* in this thread, tracing every SQL statement."""
    from _drain_apps import build

    directory.mkdir(parents=True)
    wal = directory / "queue.db-wal"
    if variant.startswith("qrq"):
        huey, noop, submit, load_settings = import_qrq(directory)
        caps = {"type_caps": ""} if variant == "qrq-nocaps" else {}
        huey.init(load_settings(data_dir=str(directory), **caps))
        conn = _no_checkpoints(huey.storage.conn)
        for _ in range(jobs):
            submit(noop, owner_id=None)
        huey.storage.lease_ahead = True  # as QrqConsumer sets it for its workers
        # The drain commits as QrqConsumer's do (the enqueues above were durable, as the
        # web app's are): compared with stock-normal, neither pays an fsync per job.
        huey.storage.synchronous = "normal"
        conn.execute("pragma synchronous = normal")
    else:
        huey, noop = build(variant, str(directory / "queue.db"))
        conn = _no_checkpoints(huey.storage.conn)
        for _ in range(jobs):
            noop()
    enqueue_wal = wal.stat().st_size
    conn.execute("pragma wal_checkpoint(truncate)")
    statements: collections.Counter = collections.Counter()
    changes_at_begin = [0]

    def trace(sql: str) -> None:
        # Called as each statement starts: at COMMIT the transaction's rows are written,
        # so total_changes tells a commit that appends to the WAL (and syncs it) from an
        # empty one (huey's pop_data takes the write lock to find nothing to delete).
        kind = sql.split(None, 1)[0].upper()
        statements[kind] += 1
        if kind == "BEGIN":
            changes_at_begin[0] = conn.total_changes
        elif kind == "COMMIT" and conn.total_changes > changes_at_begin[0]:
            statements["commits that changed rows"] += 1

    conn.set_trace_callback(trace)
    done = 0
    began = time.perf_counter()
    while (task := huey.dequeue()) is not None:
        huey.execute(task)
        done += 1
    # The leased storage deletes a worker's last row at its next (empty) dequeue.
    huey.dequeue()
    took = time.perf_counter() - began
    drain_wal = wal.stat().st_size
    pages = pages_per_job(directory / "queue.db", jobs)  # while the WAL is still there
    huey.storage.conn.set_trace_callback(None)
    if hasattr(huey.storage, "stop_heartbeat"):
        huey.storage.stop_heartbeat()
    left = huey.storage.sql("select count(*) from task", results=True)[0][0]
    huey.storage.close()
    if done != jobs or left:
        raise RuntimeError(f"profile {variant}: ran {done} of {jobs}, {left} rows left")
    writes = statements.pop("commits that changed rows", 0)
    per_job = {kind: round(count / jobs, 2) for kind, count in sorted(statements.items())}
    return {"write_transactions_per_job": per_job.get("BEGIN", 0.0),
            "commits_with_changes_per_job": round(writes / jobs, 2),
            "statements_per_job": round(sum(statements.values()) / jobs, 2),
            "by_kind_per_job": per_job, "us_per_job": round(took * 1e6 / jobs, 1),
            "enqueue_wal_bytes_per_job": round(enqueue_wal / jobs),
            "drain_wal_bytes_per_job": round(drain_wal / jobs),
            "drain_wal_pages_per_job": pages}


def _no_checkpoints(conn: sqlite3.Connection) -> sqlite3.Connection:
    """Stop *conn* from checkpointing, so the WAL's size is every page written since the
    last (explicit) checkpoint: 4 KiB plus a 24-byte header per page written per commit."""
    conn.execute("pragma wal_autocheckpoint = 0")
    conn.execute("pragma journal_size_limit = -1")
    conn.execute("pragma wal_checkpoint(truncate)")
    return conn


def profile(jobs: int, repeats: int, root: Path) -> dict:
    """Write transactions, statements and time per job, in process, one thread."""
    samples: dict = collections.defaultdict(list)
    for repeat in range(repeats):
        for variant in VARIANTS if repeat % 2 == 0 else tuple(reversed(VARIANTS)):
            samples[variant].append(
                profile_once(variant, jobs, root / f"profile-{variant}-{repeat}"))
    results = {}
    for variant, runs in samples.items():
        results[variant] = {**runs[0], "us_per_job": median([r["us_per_job"] for r in runs]),
                            "us_per_job_runs": [r["us_per_job"] for r in runs]}
    for variant, p in results.items():
        base = results["stock" if "normal" not in variant else "stock-normal"]
        p["drain_wal_ratio"] = round(p["drain_wal_bytes_per_job"]
                                     / base["drain_wal_bytes_per_job"], 2)
    return {v: results[v] for v in VARIANTS}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=5000, help="jobs per drain")
    parser.add_argument("--repeats", type=int, default=3, help="drains per variant and setting")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--worker-types", nargs="+", default=["process"],
                        choices=["process", "thread"])
    parser.add_argument("--profile-jobs", type=int, default=None,
                        help="jobs of the in-process profile (default: --jobs; 0: skip it)")
    parser.add_argument("--profile-repeats", type=int, default=3)
    parser.add_argument("--profile-only", action="store_true",
                        help="only the in-process profile (no consumer drains)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per drain, at most")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--enqueue-threads", type=int, nargs="+", default=None,
                        help="only compare enqueue rates, with each of these thread counts")
    args = parser.parse_args(argv)
    exit_on_sigterm()
    if args.profile_jobs is None:
        args.profile_jobs = args.jobs

    root = Path(tempfile.mkdtemp(prefix="qrq-bench-drain-"))
    report: dict = {"bench": "drain", "cpus": os.cpu_count(), "jobs": args.jobs,
                    "repeats": args.repeats, "consumer_flags": POLL_FLAGS,
                    "load_avg_at_start": os.getloadavg()}
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; "
          f"{args.jobs} no-op jobs per drain, {args.repeats} repeats", flush=True)
    if args.enqueue_threads:
        try:
            report["enqueue_threads"] = enqueue_rates(args, root)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        report["load_avg_at_end"] = os.getloadavg()
        print(json.dumps(report))
        return 0
    try:
        if args.profile_jobs:
            prof = profile(args.profile_jobs, args.profile_repeats, root)
            report["profile"] = prof
            print(f"\nin-process, one thread, {args.profile_jobs} jobs (dequeue + execute), "
                  f"median us/job of {args.profile_repeats}:")
            print(f"{'variant':<12} {'write tx/job':>12} {'with changes':>12} {'stmts/job':>10} "
                  f"{'us/job':>8} {'WAL B/job enq':>13} {'WAL B/job drain':>15} "
                  f"{'drain/stock':>11}  statements per job")
            for variant, p in prof.items():
                kinds = ", ".join(f"{k} {v:g}" for k, v in p["by_kind_per_job"].items())
                print(f"{variant:<12} {p['write_transactions_per_job']:12g} "
                      f"{p['commits_with_changes_per_job']:12g} "
                      f"{p['statements_per_job']:10g} {p['us_per_job']:8.1f} "
                      f"{p['enqueue_wal_bytes_per_job']:13d} {p['drain_wal_bytes_per_job']:15d} "
                      f"{p['drain_wal_ratio']:11.2f}  {kinds}",
                      flush=True)
            for variant in ("stock-normal", "qrq"):
                pages = prof[variant]["drain_wal_pages_per_job"]
                print(f"WAL pages per drained job, {variant} ({sum(pages.values()):.2f}; "
                      "bench/wal_frames.py):\n" + "\n".join(
                          f"  {count:5.2f}  {where}" for where, count in pages.items()))
        if args.profile_only:
            report["load_avg_at_end"] = os.getloadavg()
            print(json.dumps(report))
            return 0

        templates, enqueue = {}, {}
        for variant in VARIANTS:
            if variant == "qrq-nocaps":  # the same queue file; caps act at dequeue
                templates[variant] = templates["qrq"]
                continue
            if variant.endswith("-normal"):  # the same file; the pragma is per connection
                templates[variant] = templates[variant.removesuffix("-normal")]
                continue
            templates[variant] = root / f"template-{variant}"
            took = enqueue_template(variant, templates[variant], args.jobs)
            enqueue[variant] = round(args.jobs / took, 1)
        report["enqueue_jobs_per_s"] = enqueue
        print("\nenqueue (one transaction per job, from the bench process): "
              + ", ".join(f"{v} {r:.0f} jobs/s" for v, r in enqueue.items()), flush=True)

        runs: dict = collections.defaultdict(list)
        n = 0
        for worker_type in args.worker_types:
            for workers in args.workers:
                key = f"{worker_type}-{workers}"
                for repeat in range(args.repeats):
                    order = VARIANTS if repeat % 2 == 0 else tuple(reversed(VARIANTS))
                    for variant in order:
                        n += 1
                        run = drain_once(variant, templates[variant], root / f"run-{n}",
                                         args.jobs, workers, worker_type, args.timeout)
                        run["load_avg"] = round(os.getloadavg()[0], 2)
                        runs[(key, variant)].append(run)
                        print(f"  {key:<10} repeat {repeat + 1} {variant:<12} "
                              f"{run['jobs_per_s']:8.1f} jobs/s from start, "
                              f"{run['jobs_per_s_after_first']:8.1f} after first pickup, "
                              f"{run['cpu_ms_per_job']:.3f} CPU ms/job, WAL max "
                              f"{run['wal_max_mb']:.1f} MB, idle {run['wal_after_mb']:.1f} MB "
                              f"(start-up {run['startup_s']:.2f} s, load {run['load_avg']})",
                              flush=True)
                        shutil.rmtree(root / f"run-{n}", ignore_errors=True)
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)

    results: dict = {}
    print(f"\nmedians over {args.repeats} repeats (jobs/s from start and after the first "
          "pickup, each with its ratio of medians to stock; paired: median over repeats of "
          "the ratio to the stock run of the same repeat)")
    print(f"{'setting':<11} {'variant':<12} {'from start':>10} {'ratio':>6} "
          f"{'after 1st':>10} {'ratio':>6} {'paired':>7} {'CPU ms/job':>11} "
          f"{'ratio to stock-normal':>22} {'WAL max/idle MB':>16}")
    for worker_type in args.worker_types:
        for workers in args.workers:
            key = f"{worker_type}-{workers}"
            medians = {}
            for variant in VARIANTS:
                samples = runs[(key, variant)]
                medians[variant] = {
                    metric: round(median([r[metric] for r in samples]), 3)
                    for metric in ("jobs_per_s", "jobs_per_s_after_first", "cpu_ms_per_job",
                                   "startup_s")}
                medians[variant]["wal_max_mb"] = max(r["wal_max_mb"] for r in samples)
                medians[variant]["wal_after_mb"] = max(r["wal_after_mb"] for r in samples)
                medians[variant]["extra_executions"] = sum(r["executions"] - args.jobs
                                                           for r in samples)
                medians[variant]["runs"] = samples
            for variant in VARIANTS:
                m, base = medians[variant], medians["stock"]
                m["ratio"] = round(m["jobs_per_s"] / base["jobs_per_s"], 3)
                m["ratio_after_first"] = round(
                    m["jobs_per_s_after_first"] / base["jobs_per_s_after_first"], 3)
                m["ratio_to_stock_normal"] = round(
                    m["jobs_per_s"] / medians["stock-normal"]["jobs_per_s"], 3)
                # Runs of one repeat are minutes apart at most and share the machine's
                # load, so their ratio varies less than the ratio of medians.
                m["paired_ratio"] = round(median([
                    r["jobs_per_s"] / b["jobs_per_s"]
                    for r, b in zip(m["runs"], base["runs"], strict=True)]), 3)
                m["paired_ratio_to_stock_normal"] = round(median([
                    r["jobs_per_s"] / b["jobs_per_s"] for r, b in zip(
                        m["runs"], medians["stock-normal"]["runs"], strict=True)]), 3)
                print(f"{key:<11} {variant:<12} {m['jobs_per_s']:10.1f} {m['ratio']:6.2f} "
                      f"{m['jobs_per_s_after_first']:10.1f} {m['ratio_after_first']:6.2f} "
                      f"{m['paired_ratio']:7.2f} "
                      f"{m['cpu_ms_per_job']:11.3f} {m['ratio_to_stock_normal']:22.2f} "
                      f"{m['wal_max_mb']:8.1f}/{m['wal_after_mb']:<7.1f}"
                      + (f"  ({m['extra_executions']:+d} executions over {args.repeats} runs)"
                         if m["extra_executions"] else ""))
            verdict = {}
            for variant in ("plain", "qrq"):
                m = medians[variant]
                verdict[variant] = {"ratio_of_medians": m["ratio"] >= TARGET_RATIO,
                                    "paired": m["paired_ratio"] >= TARGET_RATIO}
                medians[f"target_met_{variant}"] = verdict[variant]
            results[key] = medians
            print(f"{key:<11} target >= {TARGET_RATIO:g} x stock: " + "; ".join(
                f"{variant}: {'met' if v['ratio_of_medians'] else 'NOT met'} (ratio of "
                f"medians), {'met' if v['paired'] else 'NOT met'} (paired)"
                for variant, v in verdict.items())
                + f"; without the sync per commit, plain-normal / stock-normal: "
                f"{medians['plain-normal']['ratio_to_stock_normal']:.2f} (ratio of medians), "
                f"{medians['plain-normal']['paired_ratio_to_stock_normal']:.2f} (paired)")
    report["results"] = results
    report["load_avg_at_end"] = os.getloadavg()
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
