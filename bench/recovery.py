"""Recovery: time from a kill -9 of the consumer to the killed jobs running again.

qrq: ``qrq worker -w 2`` (process workers, qrq's shipped consumer) on a fresh data directory,
with ``QRQ_LEASE_SECONDS`` set to each value of ``--leases`` (30 is the default setting) and
``QRQ_TASK_MODULES=tests.slow_tasks``. Each round submits two ``long_batch`` jobs (they wait
in steps and report progress; the ``batch`` type's shipped cap of 2 lets both run at once,
where ``steps``, a ``maintenance`` job, is capped at 1), waits until both run, waits a
further random 0 to lease/3 seconds (so the kill falls anywhere in the heartbeat's renewal
period), reads the jobs' lease deadlines, sends SIGKILL to the consumer's whole process group,
and starts a new consumer at once. It then polls the job records every 20 ms and reports,
per killed job: the lease time left at the kill, the time from the kill until the job runs
again on the new consumer (its record's ``worker`` holds the new consumer's pid), and until
it finishes. Expected: the lease time left (between 2/3 of the lease and the whole lease,
as the heartbeat renews every third) plus up to one poll (``QRQ_POLL_INTERVAL``, 0.05 s).

Baseline, same run: stock ``huey.SqliteHuey`` (bench/_recovery_stock.py) under
``huey_consumer -w 2 -k process`` with the same polling, two slow tasks killed the same way
and a new consumer started at once; after ``--stock-wait`` seconds the script counts the
killed tasks that ran again (none do: huey deleted their rows when it dequeued them).

Run: ``/work/venv/bin/python bench/recovery.py`` (leases 30 s and 5 s, 3 rounds each, and 2
stock rounds). The last line of output is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from _proc import exit_on_sigterm
from _support import REPO, env_for, median, start, stop

BENCH = Path(__file__).resolve().parent
QRQ = str(Path(sys.executable).parent / "qrq")
HUEY_CONSUMER = str(Path(sys.executable).parent / "huey_consumer")
STOCK_FLAGS = ["-k", "process", "-d", "0.05", "-m", "0.05", "-b", "1.0"]
PAUSE = 0.1


def kill_group(proc) -> float:
    """SIGKILL *proc*'s whole process group; the wall-clock time of the kill."""
    killed_at = time.time()
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)
    return killed_at


def wait(predicate, timeout: float, what: str, proc, interval: float = 0.02):
    """Poll *predicate* until it is true; fail if *proc* exits or *timeout* passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode} while waiting "
                               f"for {what}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def qrq_round(lease: float, workers: int, data: Path, rng: random.Random) -> list[dict]:
    from qrq.config import load_settings
    from qrq.queue import huey, jobs, submit
    from tests import slow_tasks

    huey.init(load_settings(data_dir=str(data), lease_seconds=lease))
    # `qrq worker` (a console script) does not put the working directory on sys.path as
    # huey_consumer does, so tests.slow_tasks needs PYTHONPATH.
    env = env_for(data, QRQ_LEASE_SECONDS=str(lease), QRQ_TASK_MODULES="tests.slow_tasks",
                  PYTHONPATH=str(REPO))
    log = data.parent / f"{data.name}-consumer.out"
    # Long enough to be still running at the kill (at most lease/3 after both started).
    steps = int((lease / 3 + 5) / PAUSE)
    ids = [submit(slow_tasks.long_batch, steps, PAUSE, owner_id=None) for _ in range(workers)]
    first = start([QRQ, "worker", "-w", str(workers)], log, cwd=REPO, env=env)
    second = None
    try:
        wait(lambda: all((j := jobs.get(huey.storage, i))["status"] == "running"
                         and j["progress"] > 0 for i in ids), 120, "the jobs to run", first)
        time.sleep(rng.uniform(0, lease / 3))
        leases = dict(huey.storage.sql(
            f"select job_id, lease_until from task where job_id in ({','.join('?' * len(ids))})",
            ids, results=True))
        killed_at = kill_group(first)
        second = start([QRQ, "worker", "-w", str(workers)], log, cwd=REPO, env=env)
        mine = f":{second.pid}:"
        rerun: dict[str, float] = {}
        done: dict[str, float] = {}
        registered = None
        deadline = time.monotonic() + lease + steps * PAUSE + 120
        while len(done) < len(ids):
            now = time.time()
            if registered is None and huey.storage.sql(
                    "select 1 from consumer where pid = ?", (second.pid,), results=True):
                registered = now
            for job_id in ids:
                job = jobs.get(huey.storage, job_id)
                if job_id not in rerun and mine in (job["worker"] or ""):
                    rerun[job_id] = now
                if job_id not in done and job["status"] in jobs.ENDED:
                    if job["status"] != "finished":
                        raise RuntimeError(f"job {job_id} ended {job['status']}: {job['error']}")
                    done[job_id] = now
            if second.poll() is not None:
                raise RuntimeError(f"the new consumer exited with {second.returncode}; "
                                   f"see {log}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"killed jobs not done in time: rerun {rerun}, done {done}")
            time.sleep(0.02)
        records = {i: jobs.get(huey.storage, i) for i in ids}
    finally:
        stop(first)
        stop(second, grace=40)
    out = []
    for job_id in ids:
        out.append({
            "job_id": job_id, "lease_left_at_kill_s": round(leases[job_id] - killed_at, 3),
            "rerun_after_kill_s": round(rerun[job_id] - killed_at, 3),
            "finished_after_kill_s": round(done[job_id] - killed_at, 3),
            "overhead_s": round(rerun[job_id] - leases[job_id], 3),
            "new_consumer_registered_after_s": round(registered - killed_at, 3)
            if registered else None,
            "attempts": records[job_id]["attempts"], "job_seconds": steps * PAUSE})
    return out


def stock_round(workers: int, directory: Path, seconds: float, stock_wait: float,
                rng: random.Random, lease_like: float) -> dict:
    directory.mkdir(parents=True)
    marks = directory / "marks"
    marks.mkdir()
    db = directory / "stock.db"
    env = env_for(directory, PYTHONPATH=f"{BENCH}{os.pathsep}{REPO}",
                  BENCH_RECOVERY_DB=str(db), BENCH_RECOVERY_MARKS=str(marks))
    os.environ.update(BENCH_RECOVERY_DB=str(db), BENCH_RECOVERY_MARKS=str(marks))
    import importlib

    import _recovery_stock

    app = importlib.reload(_recovery_stock)  # this round's file and marks
    tokens = [f"job{i}" for i in range(workers)]
    for token in tokens:
        app.slow(token, seconds)
    app.huey.storage.close()
    cmd = [HUEY_CONSUMER, "_recovery_stock.huey", "-w", str(workers), *STOCK_FLAGS]
    log = directory / "consumer.out"
    first = start(cmd, log, cwd=directory, env=env)
    second = None

    def started() -> list[str]:
        return [p.name for p in marks.iterdir() if ".started." in p.name]

    try:
        wait(lambda: len(started()) == len(tokens), 120, "the stock tasks to run", first)
        time.sleep(rng.uniform(0, lease_like / 3))
        kill_group(first)
        runs_before = set(started())
        second = start(cmd, log, cwd=directory, env=env)
        time.sleep(stock_wait)
        if second.poll() is not None:
            raise RuntimeError(f"the new stock consumer exited with {second.returncode}")
        runs_after = set(started())
        done = {p.name.split(".")[0] for p in marks.iterdir() if p.name.endswith(".done")}
    finally:
        stop(first)
        stop(second)
    conn = sqlite3.connect(db)
    rows = conn.execute("select count(*) from task").fetchone()[0]
    conn.close()
    killed = {name.split(".")[0] for name in runs_before} - done
    ran_again = {name.split(".")[0] for name in runs_after - runs_before}
    return {"killed": len(killed), "ran_again": len(killed & ran_again),
            "lost": len(killed - ran_again - done), "queue_rows_left": rows,
            "waited_s": stock_wait}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--leases", type=float, nargs="+", default=[30.0, 5.0],
                        help="QRQ_LEASE_SECONDS values to run")
    parser.add_argument("--repeats", type=int, default=3, help="kill rounds per lease")
    parser.add_argument("--workers", type=int, default=2, help="consumer workers = jobs killed")
    parser.add_argument("--stock-repeats", type=int, default=2)
    parser.add_argument("--stock-wait", type=float, default=60.0,
                        help="seconds to watch for stock's killed tasks after the restart")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    exit_on_sigterm()

    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="qrq-bench-recovery-"))
    os.environ["QRQ_DATA_DIR"] = str(root / "import")  # qrq.queue builds its Huey at import
    for path in (str(REPO), str(BENCH)):
        if path not in sys.path:
            sys.path.insert(0, path)
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; "
          f"qrq worker -w {args.workers}, leases {args.leases} s, {args.repeats} kill rounds "
          f"each; stock huey {args.stock_repeats} rounds", flush=True)
    report: dict = {"bench": "recovery", "cpus": os.cpu_count(), "workers": args.workers,
                    "repeats": args.repeats, "qrq": {}, "stock": {}}
    try:
        # Alternate the settings round by round, and stock with them.
        rounds = []
        for r in range(max(args.repeats, args.stock_repeats)):
            if r < args.repeats:
                leases = args.leases if r % 2 == 0 else list(reversed(args.leases))
                rounds += [("qrq", lease, r) for lease in leases]
            if r < args.stock_repeats:
                rounds.append(("stock", None, r))
        results: dict = {lease: [] for lease in args.leases}
        stock: list[dict] = []
        for n, (kind, lease, r) in enumerate(rounds):
            if kind == "qrq":
                out = qrq_round(lease, args.workers, root / f"qrq-{n}" / "data", rng)
                results[lease].extend(out)
                for job in out:
                    print(f"  qrq lease {lease:g} s, round {r + 1}: lease left at kill "
                          f"{job['lease_left_at_kill_s']:6.2f} s, running again after "
                          f"{job['rerun_after_kill_s']:6.2f} s, finished after "
                          f"{job['finished_after_kill_s']:6.2f} s (job {job['job_seconds']:g} "
                          f"s; attempts {job['attempts']})", flush=True)
            else:
                longest = max(args.leases)
                out = stock_round(args.workers, root / f"stock-{n}",
                                  longest / 3 + 5, args.stock_wait, rng, longest)
                stock.append(out)
                print(f"  stock round {r + 1}: killed {out['killed']}, ran again "
                      f"{out['ran_again']}, lost {out['lost']} (watched {args.stock_wait:g} s "
                      f"after the restart; queue rows left {out['queue_rows_left']})",
                      flush=True)
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)

    print(f"\n{'setting':<16} {'lease left':>10} {'running again':>14} {'finished':>9} "
          f"{'overhead':>9}   (medians, seconds after the kill)")
    for lease, jobs_out in results.items():
        m = {key: round(median([j[key] for j in jobs_out]), 3) for key in
             ("lease_left_at_kill_s", "rerun_after_kill_s", "finished_after_kill_s",
              "overhead_s")}
        m["rerun_min_s"] = min(j["rerun_after_kill_s"] for j in jobs_out)
        m["rerun_max_s"] = max(j["rerun_after_kill_s"] for j in jobs_out)
        m["killed"] = len(jobs_out)
        m["ran_again"] = sum(1 for j in jobs_out if j["attempts"] >= 2)
        m["lost"] = m["killed"] - m["ran_again"]
        m["jobs"] = jobs_out
        report["qrq"][f"{lease:g}"] = m
        print(f"qrq lease {lease:>5g} s {m['lease_left_at_kill_s']:10.2f} "
              f"{m['rerun_after_kill_s']:14.2f} {m['finished_after_kill_s']:9.2f} "
              f"{m['overhead_s']:9.3f}   (running again: min {m['rerun_min_s']:.2f}, max "
              f"{m['rerun_max_s']:.2f}; {m['ran_again']} of {m['killed']} killed jobs ran "
              f"again, {m['lost']} lost)")
    killed = sum(s["killed"] for s in stock)
    lost = sum(s["lost"] for s in stock)
    report["stock"] = {"rounds": stock, "killed": killed, "lost": lost,
                       "ran_again": sum(s["ran_again"] for s in stock)}
    print(f"stock SqliteHuey: {killed} tasks killed, {report['stock']['ran_again']} ran again, "
          f"{lost} lost (watched {args.stock_wait:g} s after each restart)")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
