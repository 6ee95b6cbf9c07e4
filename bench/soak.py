"""Soak: many PDF jobs through the web app and a consumer, watching for growth and errors.

Sets up a fresh data directory (``qrq init --demo``), serves ``web:app`` with waitress
(``--threads=8``, 127.0.0.1 only) and runs ``qrq worker -w 4`` (qrq's shipped consumer:
process workers, leases, job records) on it. Client threads (8 by default), each on its own
keep-alive connection, POST ``/api/generate-qr-pdf`` (demo template 1, ``copies=1``: one
code on one A4 page) and poll ``/api/job-status/<id>`` of their oldest job whenever they
have ``--window`` jobs outstanding, until JOBS jobs have been submitted and every one was
seen ``finished``.

A thread reads the size of ``queue.db-wal`` every 20 ms for its peak (issue 18's
bound: 16 MB). Every ``--sample`` seconds the script records the size of ``queue.db``
and its ``-wal``,
the resident memory of the consumer's process group (main process and workers, from
/proc), the web server's, the rows of the job and task tables, and the rate. From
``--purge-after`` (a fraction of JOBS) on, a separate process (bench/_soak_purge.py) runs
the retention purge every ``--purge-interval`` seconds, as the hourly ``retention.purge``
task does for jobs older than ``QRQ_RETAIN_FINISHED_DAYS``: ``qrq.queue.retention.purge_jobs`` on
finished jobs that ended more than ``--purge-age`` seconds ago (not 0, so a client still
polling a job that has just finished does not get a 404 for it). ``--purge-mode scan`` (the
default) deletes the artifacts in one pass with ``qrq.queue.retention.purge_stale``; ``qrq``
lets ``purge_jobs`` glob the artifacts directory once per job, as the hourly task does.
Before the purges start, the job table grows by design (every job keeps its record and its
PDF until retention removes them); once they run, the file stays flat because SQLite
reuses the freed pages.

At the end it counts HTTP 5xx answers, answers and log lines saying "database is locked",
tracebacks in the logs, and jobs that did not end ``finished``. All of those must be 0.

Run: ``/work/venv/bin/python bench/soak.py`` (50,000 jobs), or ``--jobs 2000`` for a quick
look. The last line of output is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import collections
import http.client
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path

from _proc import exit_on_sigterm, group_rss
from _support import (
    PYTHON,
    REPO,
    env_for,
    free_port,
    median,
    percentile,
    qrq_cli,
    start,
    stop,
    wait_for_text,
)

ENDED = ("finished", "failed", "canceled", "expired")
QRQ = str(Path(sys.executable).parent / "qrq")
BENCH = Path(__file__).resolve().parent


class Stats:
    """What the client threads saw, under one lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.codes: collections.Counter = collections.Counter()
        self.locked_answers = 0
        self.server_errors: list[str] = []
        self.connection_errors = 0
        self.submitted = 0
        self.finished = 0
        self.not_finished: list[tuple[str, str]] = []
        self.post_ms: list[float] = []
        self.get_ms: list[float] = []


class Client(threading.Thread):
    """One client: submit jobs, keep at most *window* outstanding, poll the oldest."""

    def __init__(self, port: int, token: str, stats: Stats, jobs: int, window: int,
                 body: bytes) -> None:
        super().__init__(daemon=True)
        self.port, self.stats, self.jobs, self.window, self.body = port, stats, jobs, window, body
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.error: BaseException | None = None

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        for attempt in range(3):
            began = time.perf_counter()
            try:
                self.conn.request(method, path, body=body, headers=self.headers)
                response = self.conn.getresponse()
                data = response.read()
            except (http.client.HTTPException, OSError):
                self.conn.close()
                with self.stats.lock:
                    self.stats.connection_errors += 1
                if attempt == 2:
                    raise
                time.sleep(0.1)
                continue
            took = (time.perf_counter() - began) * 1000
            with self.stats.lock:
                self.stats.codes[f"{method} {response.status}"] += 1
                (self.stats.post_ms if method == "POST" else self.stats.get_ms).append(took)
                if b"database is locked" in data:
                    self.stats.locked_answers += 1
                if response.status >= 500:
                    self.stats.server_errors.append(f"{method} {path}: {response.status} "
                                                    f"{data[:300]!r}")
            return response.status, data
        raise AssertionError("unreachable")

    def take_one(self) -> bool:
        with self.stats.lock:
            if self.stats.submitted >= self.jobs:
                return False
            self.stats.submitted += 1
            return True

    def wait_oldest(self, outstanding: collections.deque) -> None:
        job_id = outstanding[0]
        status, data = self.request("GET", f"/api/job-status/{job_id}")
        state = json.loads(data).get("status") if status == 200 else f"http {status}"
        if state in ENDED or status != 200:
            outstanding.popleft()
            with self.stats.lock:
                if state == "finished":
                    self.stats.finished += 1
                else:
                    self.stats.not_finished.append((job_id, state))
        else:
            time.sleep(0.05)

    def run(self) -> None:
        outstanding: collections.deque = collections.deque()
        try:
            while self.take_one():
                status, data = self.request("POST", "/api/generate-qr-pdf", self.body)
                if status == 202:
                    outstanding.append(json.loads(data)["job_id"])
                else:
                    with self.stats.lock:
                        self.stats.not_finished.append(("(not submitted)", f"http {status}"))
                while len(outstanding) >= self.window:
                    self.wait_oldest(outstanding)
            while outstanding:
                self.wait_oldest(outstanding)
        except BaseException as exc:  # reported by the main thread
            self.error = exc
        finally:
            self.conn.close()


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def dir_size(path: Path) -> int:
    return sum(file_size(p) for p in path.iterdir()) if path.is_dir() else 0


def wait_http(port: int, token: str, proc, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the web server exited with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/api/me", headers={"Authorization": f"Bearer {token}"})
            if conn.getresponse().status == 200:
                conn.close()
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("the web server did not answer")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=50_000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--window", type=int, default=8,
                        help="jobs a client may have outstanding before it waits")
    parser.add_argument("--workers", type=int, default=4, help="qrq worker -w")
    parser.add_argument("--template", type=int, default=1, help="demo template id")
    parser.add_argument("--copies", type=int, default=1)
    parser.add_argument("--sample", type=float, default=15.0, help="seconds between samples")
    parser.add_argument("--purge-after", type=float, default=0.2,
                        help="fraction of the jobs submitted before the purges start "
                             "(1: never purge)")
    parser.add_argument("--purge-interval", type=float, default=20.0)
    parser.add_argument("--purge-age", type=float, default=30.0,
                        help="purge finished jobs that ended this many seconds ago")
    parser.add_argument("--purge-mode", choices=["scan", "qrq"], default="scan",
                        help="how the purge deletes artifacts (see bench/_soak_purge.py)")
    parser.add_argument("--keep", action="store_true", help="keep the data directory")
    args = parser.parse_args(argv)
    exit_on_sigterm()

    root = Path(tempfile.mkdtemp(prefix="qrq-bench-soak-"))
    try:
        return run(args, root)
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


class WalPeak(threading.Thread):
    """The largest size the WAL file *path* had, read every 20 ms until the process ends."""

    def __init__(self, path: Path):
        super().__init__(daemon=True, name="wal-peak")
        self.path, self.peak = path, 0

    def run(self) -> None:
        while True:
            self.peak = max(self.peak, file_size(self.path))
            time.sleep(0.02)


def run(args: argparse.Namespace, root: Path) -> int:
    data = root / "data"
    web = consumer = purger = None
    stats = Stats()
    samples: list[dict] = []
    try:
        token = qrq_cli(data, "init", "--demo").strip().splitlines()[-1]
        os.environ["QRQ_DATA_DIR"] = str(data)
        sys.path.insert(0, str(REPO))
        from qrq.config import load_settings

        settings = load_settings()
        queue_db = settings.queue_db
        wal = queue_db.with_name(queue_db.name + "-wal")
        port = free_port()
        env = env_for(data, QRQ_MAX_ACTIVE_JOBS="1000000")  # one user queues every job
        web = start([PYTHON, "-m", "waitress", f"--listen=127.0.0.1:{port}", "--threads=8",
                     "web:app"], root / "web.out", cwd=REPO, env=env)
        consumer = start([QRQ, "worker", "-w", str(args.workers)], root / "consumer.out",
                         cwd=REPO, env=env)
        wait_http(port, token, web)
        wait_for_text(settings.logs_dir / "consumer.log", "consumer started", consumer, 60)
        time.sleep(1.0)  # let the workers fork and settle
        reader = sqlite3.connect(queue_db, timeout=30)
        wal_peak = WalPeak(wal)
        wal_peak.start()

        began = time.perf_counter()
        last = {"t": 0.0, "finished": 0}

        def sample(label: str = "") -> dict:
            now = time.perf_counter() - began
            with stats.lock:
                submitted, finished = stats.submitted, stats.finished
            rss, procs = group_rss(consumer.pid)
            row = {
                "t_s": round(now, 1), "submitted": submitted, "finished": finished,
                "rate_per_s": round((finished - last["finished"]) / max(now - last["t"], 1e-9),
                                    1),
                "queue_db_bytes": file_size(queue_db), "wal_bytes": file_size(wal),
                "consumer_rss_bytes": rss, "consumer_procs": procs,
                "web_rss_bytes": group_rss(web.pid)[0],
                "job_rows": reader.execute("select count(*) from job").fetchone()[0],
                "task_rows": reader.execute("select count(*) from task").fetchone()[0],
                "artifacts_bytes": dir_size(settings.artifacts_dir), "label": label,
            }
            last.update(t=now, finished=finished)
            samples.append(row)
            print(f"  {row['t_s']:7.1f}s submitted {submitted:6d} finished {finished:6d} "
                  f"({row['rate_per_s']:5.1f}/s)  queue.db {row['queue_db_bytes'] / 1e6:7.2f} MB"
                  f" + wal {row['wal_bytes'] / 1e6:5.2f} MB  job rows {row['job_rows']:6d}  "
                  f"consumer RSS {rss / 1e6:6.1f} MB ({procs} procs)  web RSS "
                  f"{row['web_rss_bytes'] / 1e6:6.1f} MB {label}", flush=True)
            return row

        print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; "
              f"{args.jobs} jobs, {args.clients} clients (window {args.window}), qrq worker "
              f"-w {args.workers}; purge ({args.purge_mode}) finished jobs older than "
              f"{args.purge_age:g} s every {args.purge_interval:g} s once "
              f"{args.purge_after:.0%} are submitted", flush=True)
        sample("start (idle)")
        body = json.dumps({"template_id": args.template,
                           "options": {"copies": args.copies}}).encode()
        clients = [Client(port, token, stats, args.jobs, args.window, body)
                   for _ in range(args.clients)]
        for client in clients:
            client.start()
        next_sample = args.sample
        while any(c.is_alive() for c in clients):
            time.sleep(0.5)
            for proc, name in ((web, "web server"), (consumer, "consumer"),
                               (purger, "purge process")):
                if proc is not None and proc.poll() is not None:
                    raise RuntimeError(f"the {name} exited with {proc.returncode}")
            now = time.perf_counter() - began
            with stats.lock:
                submitted = stats.submitted
            if purger is None and args.purge_after < 1 and \
                    submitted >= args.purge_after * args.jobs:
                sample("purges start")
                # Its own process, as the consumer's periodic task would run it: a purge
                # in this process would take the GIL from the client threads.
                purger = start([PYTHON, str(BENCH / "_soak_purge.py"), str(data),
                                "--interval", str(args.purge_interval),
                                "--age", str(args.purge_age), "--mode", args.purge_mode],
                               root / "purge.out", cwd=REPO, env=env)
            if now >= next_sample:
                sample()
                next_sample += args.sample
        for client in clients:
            if client.error is not None:
                raise RuntimeError(f"a client failed: {client.error!r}")
        elapsed = time.perf_counter() - began
        end = sample("end")
        reader_statuses = dict(reader.execute(
            "select status, count(*) from job group by status").fetchall())
        reader.close()
    finally:
        stop(purger)
        stop(web)
        stop(consumer, grace=40)

    purge_out = (root / "purge.out").read_text(errors="replace") if purger else ""
    rounds = [json.loads(line) for line in purge_out.splitlines() if line.startswith("{")]
    purges = [r for r in rounds if r["error"] is None]
    purge_errors = [r["error"] for r in rounds if r["error"] is not None]
    logs = {"consumer": (root / "consumer.out").read_text(errors="replace")
            + (data / "logs" / "consumer.log").read_text(errors="replace"),
            "web": (root / "web.out").read_text(errors="replace"), "purge": purge_out}
    locked_in_logs = {name: text.count("database is locked") for name, text in logs.items()}
    tracebacks = {name: text.count("Traceback") for name, text in logs.items()}

    first = samples[0]
    # Memory once the workers have rendered some PDFs (imports done, caches warm).
    warm = next((s for s in samples if s["finished"] >= 0.05 * args.jobs), end)
    purge_start = next((s for s in samples if s["label"] == "purges start"), None)
    server_errors = sum(n for key, n in stats.codes.items() if key.split()[1].startswith("5"))
    summary = {
        "bench": "soak", "cpus": os.cpu_count(), "jobs": args.jobs, "clients": args.clients,
        "window": args.window, "workers": args.workers, "template": args.template,
        "copies": args.copies, "elapsed_s": round(elapsed, 1),
        "jobs_per_s": round(args.jobs / elapsed, 1),
        "finished_seen_by_clients": stats.finished,
        "not_finished": stats.not_finished[:20], "not_finished_count": len(stats.not_finished),
        "job_statuses_left_in_db": reader_statuses,
        "http_codes": dict(stats.codes), "http_5xx": server_errors,
        "http_5xx_examples": stats.server_errors[:5],
        "http_locked_answers": stats.locked_answers,
        "connection_errors": stats.connection_errors,
        "locked_in_logs": locked_in_logs, "tracebacks_in_logs": tracebacks,
        "post_ms": {"p50": round(percentile(stats.post_ms, 50), 2),
                    "p99": round(percentile(stats.post_ms, 99), 2)},
        "get_ms": {"p50": round(percentile(stats.get_ms, 50), 2),
                   "p99": round(percentile(stats.get_ms, 99), 2)},
        "queue_db_bytes": {"start": first["queue_db_bytes"],
                           "purges_start": purge_start and purge_start["queue_db_bytes"],
                           "end": end["queue_db_bytes"],
                           "max": max(s["queue_db_bytes"] for s in samples)},
        "wal_bytes": {"start": first["wal_bytes"], "end": end["wal_bytes"],
                      "max": max(s["wal_bytes"] for s in samples), "peak": wal_peak.peak},
        "consumer_rss_bytes": {"start_idle": first["consumer_rss_bytes"],
                               "warm": warm["consumer_rss_bytes"],
                               "end": end["consumer_rss_bytes"],
                               "max": max(s["consumer_rss_bytes"] for s in samples)},
        "web_rss_bytes": {"start_idle": first["web_rss_bytes"], "warm": warm["web_rss_bytes"],
                          "end": end["web_rss_bytes"]},
        "purge_mode": args.purge_mode,
        "purges": {"count": len(purges), "jobs_purged": sum(p["purged"] for p in purges),
                   "median_s": round(median([p["seconds"] for p in purges]), 3) if purges
                   else None, "max_s": max((p["seconds"] for p in purges), default=None),
                   "ms_per_job_purged": round(1000 * sum(p["seconds"] for p in purges)
                                              / max(1, sum(p["purged"] for p in purges)), 2),
                   "failed_rounds": len(purge_errors),
                   "first_error": purge_errors[0] if purge_errors else None},
        "samples": samples,
    }
    if purge_start is not None:
        # Growth of the file over the second half of the purge phase, per 1,000 jobs.
        purge_samples = [s for s in samples if s["t_s"] >= purge_start["t_s"]]
        mid = purge_samples[len(purge_samples) // 2]
        jobs_between = max(end["submitted"] - mid["submitted"], 1)
        summary["queue_db_growth_bytes_per_1000_jobs"] = {
            "before_purges": round((purge_start["queue_db_bytes"] - first["queue_db_bytes"])
                                   * 1000 / max(purge_start["submitted"], 1)),
            "second_half_of_purge_phase": round(
                (end["queue_db_bytes"] - mid["queue_db_bytes"]) * 1000 / jobs_between)}
    print(f"\n{args.jobs} jobs in {elapsed:.0f} s ({summary['jobs_per_s']} jobs/s); finished "
          f"(seen by clients): {stats.finished}; not finished: {len(stats.not_finished)}")
    print(f"HTTP: {dict(stats.codes)}; 5xx: {server_errors}; 'database is locked' in answers: "
          f"{stats.locked_answers}, in logs: {locked_in_logs}; tracebacks: {tracebacks}; "
          f"connection errors: {stats.connection_errors}")
    print(f"POST p50 {summary['post_ms']['p50']} ms, p99 {summary['post_ms']['p99']} ms; "
          f"status GET p50 {summary['get_ms']['p50']} ms, p99 {summary['get_ms']['p99']} ms")
    q, r = summary["queue_db_bytes"], summary["consumer_rss_bytes"]
    print(f"queue.db: start {q['start'] / 1e6:.2f} MB, when purges start "
          f"{(q['purges_start'] or 0) / 1e6:.2f} MB, end {q['end'] / 1e6:.2f} MB, max "
          f"{q['max'] / 1e6:.2f} MB; wal max {summary['wal_bytes']['max'] / 1e6:.2f} MB "
          f"(samples), peak {summary['wal_bytes']['peak'] / 1e6:.2f} MB (every 20 ms)")
    if "queue_db_growth_bytes_per_1000_jobs" in summary:
        g = summary["queue_db_growth_bytes_per_1000_jobs"]
        print(f"queue.db growth per 1,000 jobs: before purges {g['before_purges']} B, second "
              f"half of the purge phase {g['second_half_of_purge_phase']} B")
    print(f"consumer RSS (process group): idle start {r['start_idle'] / 1e6:.1f} MB, warm "
          f"{r['warm'] / 1e6:.1f} MB, end {r['end'] / 1e6:.1f} MB, max {r['max'] / 1e6:.1f} MB")
    shown = {k: v for k, v in summary["purges"].items() if k != "first_error"}
    print(f"purges: {shown}")
    if purge_errors:
        print(f"{len(purge_errors)} purge rounds failed; the first:\n{purge_errors[0]}")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
