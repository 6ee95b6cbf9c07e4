"""Latency of the job API under concurrent clients, against a trivial endpoint on the same server.

Sets up a fresh data directory with the CLI (``qrq init --demo``, ``qrq users create``), then
serves ``web:app`` with waitress (``--threads=8``, on 127.0.0.1 only). Per repeat, 8 client
threads, each on its own keep-alive connection and all at once, run three phases of N
requests each:

* baseline: ``GET /api/me`` (token check, one small JSON body);
* ``POST /api/generate-qr-pdf`` with {"template_id": 2, "options": {"copies": 8}};
* ``GET /api/job-status/<id>`` of each job that client created.

The clients are closed-loop (each sends its next request when the last one answers), so
the server is kept saturated and latency includes the wait for a server thread and the GIL;
the ratio to the baseline shows qrq's own work (validation, enqueue with its job record, the
completion estimate, the job read). No consumer runs by default, so the jobs just queue;
``--worker`` also runs ``qrq worker -w 2`` rendering them meanwhile (it competes for the 2
CPUs and the SQLite write lock). Figures are the median over repeats of each repeat's p50 and p99.

Run: ``/work/venv/bin/python bench/api_latency.py [--worker]``. The last line of output is
one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

from _proc import group_cpu_seconds
from _support import (
    PYTHON,
    REPO,
    env_for,
    free_port,
    load_average,
    median,
    percentile,
    qrq_cli,
    start,
    stop,
    wait_for_text,
)

TARGET_P99_MS = 50.0
BODY = json.dumps({"template_id": 2, "options": {"copies": 8}})


class Client:
    """One keep-alive connection; records latency (ms) per request kind."""

    def __init__(self, port: int, token: str):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.headers = {"Authorization": f"Bearer {token}"}
        self.errors: list[str] = []

    def request(self, method: str, path: str, body: str | None = None) -> tuple[float, dict]:
        headers = dict(self.headers)
        if body is not None:
            headers["Content-Type"] = "application/json"
        start_t = time.perf_counter()
        try:
            self.conn.request(method, path, body=body, headers=headers)
            response = self.conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as exc:
            self.conn.close()  # reconnects on the next request
            self.errors.append(f"{method} {path}: {type(exc).__name__}: {exc}")
            return (time.perf_counter() - start_t) * 1000, {}
        elapsed = (time.perf_counter() - start_t) * 1000
        if not 200 <= response.status < 300:
            self.errors.append(f"{method} {path}: {response.status} {data[:200]!r}")
            return elapsed, {}
        return elapsed, json.loads(data)


def run_phase(port: int, token: str, threads: int, n: int, phase: str,
              job_ids: list[list[str]] | None = None) -> dict:
    """Run *phase* on *threads* clients at once: N requests each, latencies in ms.

    ``generate`` returns the job ids it created per client in ``job_ids``; ``status``
    reads those (client i reads the jobs client i created).
    """
    barrier = threading.Barrier(threads + 1)
    results: list[dict] = [{} for _ in range(threads)]

    def work(index: int) -> None:
        client = Client(port, token)
        latency, created = [], []
        barrier.wait()
        for i in range(n):
            if phase == "me":
                ms, _ = client.request("GET", "/api/me")
            elif phase == "generate":
                ms, body = client.request("POST", "/api/generate-qr-pdf", BODY)
                created.append(body.get("job_id", "missing"))
            else:
                ms, body = client.request("GET", f"/api/job-status/{job_ids[index][i]}")
                if body and body.get("job_id") != job_ids[index][i]:
                    client.errors.append(f"job-status answered for {body.get('job_id')}")
            latency.append(ms)
        client.conn.close()
        results[index] = {"latency": latency, "errors": client.errors, "created": created}

    workers = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(threads)]
    for worker in workers:
        worker.start()
    barrier.wait()
    began = time.perf_counter()
    for worker in workers:
        worker.join()
    wall = time.perf_counter() - began
    errors = [e for r in results for e in r.get("errors", ["a client thread died"])]
    latency = [ms for r in results for ms in r.get("latency", [])]
    return {"latency": latency, "errors": errors, "wall_s": wall,
            "job_ids": [r.get("created", []) for r in results]}


def summarize(values: list[float]) -> dict:
    return {"p50": percentile(values, 50), "p99": percentile(values, 99),
            "max": max(values), "n": len(values)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--requests", type=int, default=100,
                        help="requests of each kind per client thread per repeat")
    parser.add_argument("--clients", type=int, default=8, help="concurrent client threads")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker", action="store_true",
                        help="also run a consumer (qrq worker -w 2) during the run")
    parser.add_argument("--worker-nice", type=int, default=None,
                        help="QRQ_WORKER_NICE of the consumer (default: qrq's default)")
    parser.add_argument("--worker-io", choices=("low", "idle", "normal"), default=None,
                        help="QRQ_WORKER_IO_PRIORITY of the consumer (default: qrq's default)")
    parser.add_argument("--keep", action="store_true", help="keep the data dir and logs")
    parser.add_argument("--enqueue-sync", choices=("full", "normal"), default="full",
                        help="QRQ_ENQUEUE_SYNC of the web app (default: qrq's default, full)")
    args = parser.parse_args(argv)

    data_dir = Path(tempfile.mkdtemp(prefix="qrq-bench-api-"))
    server = consumer = None
    phases: dict[str, list[dict]] = {"me": [], "generate": [], "status": []}
    try:
        qrq_cli(data_dir, "init", "--demo")
        token = qrq_cli(data_dir, "users", "create", "bench").strip().splitlines()[-1]
        port = free_port()
        server_log = data_dir / "waitress.log"
        server = start([PYTHON, "-m", "waitress", f"--listen=127.0.0.1:{port}", "--threads=8",
                        "web:app"], server_log, cwd=REPO,
                       # Every request queues a job as one user: a per-user limit far
                       # above the run's 2,640 jobs keeps the check in the timing.
                       env=env_for(data_dir, QRQ_ENQUEUE_SYNC=args.enqueue_sync,
                                   QRQ_MAX_ACTIVE_JOBS="1000000"))
        wait_for_text(server_log, "Serving on", server, timeout=30)
        if args.worker:
            priority = {}
            if args.worker_nice is not None:
                priority["QRQ_WORKER_NICE"] = str(args.worker_nice)
            if args.worker_io is not None:
                priority["QRQ_WORKER_IO_PRIORITY"] = args.worker_io
            consumer = start([PYTHON, "-m", "qrq", "--data-dir", str(data_dir), "worker",
                              "-w", "2"], data_dir / "worker.out", cwd=REPO,
                             env=env_for(data_dir, **priority))
            wait_for_text(data_dir / "logs" / "consumer.log", "consumer started", consumer,
                          timeout=30)
        load_start = load_average()
        cpu_start = {"server": group_cpu_seconds(server.pid),
                     "consumer": group_cpu_seconds(consumer.pid) if consumer else 0.0}
        print(f"machine: {os.cpu_count()} CPUs, load average {load_start}; "
              f"waitress --threads=8 on 127.0.0.1:{port}; "
              f"{args.clients} client threads x {args.requests} requests of each kind, "
              f"{args.repeats} repeats; QRQ_ENQUEUE_SYNC={args.enqueue_sync}; consumer: "
              + ("qrq worker -w 2 running" if args.worker else "none (jobs only queue)"))

        warm_errors, warm_ids = [], None
        for phase in ("me", "generate", "status"):
            made = run_phase(port, token, args.clients, 10, phase, warm_ids)
            warm_errors, warm_ids = warm_errors + made["errors"], made["job_ids"]
        for i in range(args.repeats):
            # Alternate baseline and qrq order, so drift hits both alike.
            order = ("me", "generate", "status") if i % 2 == 0 else ("generate", "status", "me")
            for phase in order:
                made = run_phase(port, token, args.clients, args.requests, phase,
                                 phases["generate"][-1]["job_ids"] if phase == "status"
                                 else None)
                phases[phase].append(made)
        if consumer is not None and consumer.poll() is not None:
            raise RuntimeError(f"the consumer exited with {consumer.returncode}")
        cpu_s = {"server": group_cpu_seconds(server.pid) - cpu_start["server"],
                 "consumer": (group_cpu_seconds(consumer.pid) - cpu_start["consumer"]
                              if consumer else 0.0)}
    finally:
        stop(server)
        stop(consumer, grace=40)
        if args.keep or sys.exc_info()[0] is not None:
            print(f"kept {data_dir} (logs inside)")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)

    load_end = load_average()
    runs = {kind: [r["latency"] for r in phases[kind]] for kind in phases}
    report: dict[str, dict] = {}
    print(f"\n{'request':<32} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}   per repeat p50/p99")
    labels = {"me": "GET /api/me (baseline)", "generate": "POST /api/generate-qr-pdf",
              "status": "GET /api/job-status/<id>"}
    for kind, per_repeat in runs.items():
        stats = [summarize(v) for v in per_repeat]
        report[kind] = {"p50_ms": median([s["p50"] for s in stats]),
                        "p99_ms": median([s["p99"] for s in stats]),
                        "max_ms": max(s["max"] for s in stats),
                        "samples": sum(s["n"] for s in stats),
                        "per_repeat": [{"p50_ms": round(s["p50"], 2),
                                        "p99_ms": round(s["p99"], 2)} for s in stats]}
        r = report[kind]
        print(f"{labels[kind]:<32} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {r['max_ms']:8.1f}   "
              + "  ".join(f"{s['p50']:.1f}/{s['p99']:.1f}" for s in stats))
    throughput = {p: median([len(r["latency"]) / r["wall_s"] for r in phases[p]])
                  for p in phases}
    errors = warm_errors + [e for p in phases.values() for r in p for e in r["errors"]]
    base = report["me"]
    ratios = {kind: {"p50": report[kind]["p50_ms"] / base["p50_ms"],
                     "p99": report[kind]["p99_ms"] / base["p99_ms"]}
              for kind in ("generate", "status")}
    met = not errors and all(report[k]["p99_ms"] < TARGET_P99_MS for k in ("generate", "status"))
    print("throughput: " + ", ".join(f"{labels[k]} {v:.0f} req/s"
                                     for k, v in throughput.items()))
    for kind, ratio in ratios.items():
        print(f"{labels[kind]} vs baseline: p50 {ratio['p50']:.2f}x, p99 {ratio['p99']:.2f}x")
    print(f"non-2xx or failed responses: {len(errors)}; load average at the end: {load_end}")
    print(f"CPU seconds during the run: web server {cpu_s['server']:.1f}, consumer "
          f"{cpu_s['consumer']:.1f}")
    for error in errors[:10]:
        print(f"  {error}")
    print(f"target: p99 < {TARGET_P99_MS:g} ms with 0 non-2xx: " + ("met" if met else "NOT met"))
    summary = {
        "bench": "api_latency", "cpus": os.cpu_count(),
        "load_average": [load_start, load_end], "clients": args.clients,
        "requests_per_client": args.requests, "repeats": args.repeats,
        "consumer": "qrq worker -w 2" if args.worker else None,
        "enqueue_sync": args.enqueue_sync, "worker_nice": args.worker_nice,
        "worker_io": args.worker_io,
        "cpu_s": {k: round(v, 2) for k, v in cpu_s.items()},
        **{f"{kind}_{k}": round(v, 2) for kind in report for k, v in report[kind].items()
           if k in ("p50_ms", "p99_ms", "max_ms")},
        "ratio_vs_me": {k: {q: round(v, 2) for q, v in r.items()} for k, r in ratios.items()},
        "throughput_rps": {k: round(v, 1) for k, v in throughput.items()},
        "non_2xx": len(errors), "target_p99_ms": TARGET_P99_MS, "target_met": met,
    }
    print(json.dumps(summary))
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())
