"""HTTP enqueue latency, POST /api/generate-qr-pdf: qrq on PostgreSQL vs qrq on SQLite.

Two web servers run side by side, ``waitress --threads=8 web:app`` on 127.0.0.1, one with
``QRQ_DATABASE_URL`` on the benchmark's PostgreSQL server (a private cluster, or
``--database-url``), one on SQLite files; each set up with ``qrq init --demo`` and ``qrq
users create`` (bench/_pg_support.py). Per repeat, the two servers in alternating order,
8 client threads (bench/api_latency.py's closed-loop clients, each on its own keep-alive
connection, all at once) run N requests each of: ``GET /api/me`` (the baseline: token
check, no queue), ``POST /api/generate-qr-pdf`` (validation, the enqueue with its job
record) and ``GET /api/job-status/<id>``. No consumer runs, so the jobs only queue.
Figures are medians over repeats of each repeat's p50 and p99; ratios are paired (per
repeat) to the same server's ``GET /api/me`` and, for PostgreSQL, to SQLite's POST. The
peers (procrastinate, PgQueuer) ship no HTTP API and are not in this one.

Run: ``flock /tmp/qrq-bench.lock .venv/bin/python bench/pg_api_latency.py`` (100 requests
per client and kind, 3 repeats). Target (issue 14): POST p99 < 50 ms with 8 clients on
PostgreSQL. The last line of output is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from _pg_support import System, add_server_argument, server, server_cpu_seconds, server_settings
from _proc import exit_on_sigterm, group_cpu_seconds
from _support import PYTHON, REPO, free_port, load_average, median, start, stop, wait_for_text
from api_latency import TARGET_P99_MS, run_phase, summarize

BACKENDS = ("qrq-pg", "qrq-sqlite")
PHASES = ("me", "generate", "status")


def serve(system: System) -> tuple:
    """A waitress server for *system*; (process, port, token)."""
    token = system.qrq_cli("users", "create", "bench").strip().splitlines()[-1]
    port = free_port()
    log = system.work / "waitress.log"
    # One user queues every job: a per-user limit far above the run's keeps the check timed.
    proc = start([PYTHON, "-m", "waitress", f"--listen=127.0.0.1:{port}", "--threads=8",
                  "web:app"], log, cwd=REPO, env={**system.env, "QRQ_MAX_ACTIVE_JOBS": "1000000"})
    wait_for_text(log, "Serving on", proc, timeout=60)
    return proc, port, token


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--requests", type=int, default=100,
                        help="requests of each kind per client per repeat")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    add_server_argument(parser)
    args = parser.parse_args(argv)
    exit_on_sigterm()
    work = Path(tempfile.mkdtemp(prefix="qrq-pg-api-"))
    work.chmod(0o755)
    runs: dict = collections.defaultdict(list)
    errors: list[str] = []
    servers: dict = {}
    systems: dict = {}
    load_start = load_average()
    try:
        with server(args.database_url, work) as (url, postmaster):
            settings = server_settings(url)
            for name in BACKENDS:
                systems[name] = System(name, work, url)
                servers[name] = serve(systems[name])
            print(f"machine: {os.cpu_count()} CPUs, load average {load_start}; waitress "
                  f"--threads=8 per backend; {args.clients} clients x {args.requests} "
                  f"requests of each kind, {args.repeats} repeats; no consumer", flush=True)
            for _, port, token in servers.values():  # warm up
                ids = None
                for phase in PHASES:
                    ids = run_phase(port, token, args.clients, 10, phase, ids)["job_ids"]
            cpu_start = {n: group_cpu_seconds(p.pid) for n, (p, _, _) in servers.items()}
            server_start = server_cpu_seconds(postmaster)
            for repeat in range(args.repeats):
                for name in BACKENDS if repeat % 2 == 0 else tuple(reversed(BACKENDS)):
                    _, port, token = servers[name]
                    ids = None
                    for phase in PHASES:
                        made = run_phase(port, token, args.clients, args.requests, phase, ids)
                        ids = made["job_ids"]
                        errors += made["errors"]
                        runs[(name, phase)].append(summarize(made["latency"]))
                    print(f"  repeat {repeat + 1} {name:<11} " + ", ".join(
                        f"{p} p50/p99 {runs[(name, p)][-1]['p50']:.1f}/"
                        f"{runs[(name, p)][-1]['p99']:.1f} ms" for p in PHASES)
                        + f" (load {os.getloadavg()[0]:.1f})", flush=True)
            cpu_s = {n: round(group_cpu_seconds(p.pid) - cpu_start[n], 2)
                     for n, (p, _, _) in servers.items()}
            server_end = server_cpu_seconds(postmaster)
            if server_end is not None:
                cpu_s["postgresql"] = round(server_end - server_start, 2)
    finally:
        for proc, _, _ in servers.values():
            stop(proc)
        for system in systems.values():
            system.close()
        shutil.rmtree(work, ignore_errors=True)

    figures: dict = {}
    for name in BACKENDS:
        figures[name] = {}
        for phase in PHASES:
            stats = runs[(name, phase)]
            figures[name][phase] = {
                "p50_ms": round(median([s["p50"] for s in stats]), 2),
                "p99_ms": round(median([s["p99"] for s in stats]), 2),
                "max_ms": round(max(s["max"] for s in stats), 2),
                "p99_ratio_to_me": round(median([s["p99"] / m["p99"] for s, m in zip(
                    stats, runs[(name, "me")], strict=True)]), 2)}
    for phase in ("generate", "status"):
        figures["qrq-pg"][phase]["p99_ratio_to_sqlite"] = round(median([
            p["p99"] / s["p99"] for p, s in zip(runs[("qrq-pg", phase)],
                                                runs[("qrq-sqlite", phase)], strict=True)]), 2)
    print(f"\n{'backend':<11} {'request':<10} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
          f"{'p99/me':>7}")
    for name, by_phase in figures.items():
        for phase, f in by_phase.items():
            print(f"{name:<11} {phase:<10} {f['p50_ms']:8.2f} {f['p99_ms']:8.2f} "
                  f"{f['max_ms']:8.1f} {f['p99_ratio_to_me']:7.2f}")
    post = figures["qrq-pg"]["generate"]
    met = not errors and post["p99_ms"] < TARGET_P99_MS
    print(f"qrq-pg POST p99 / qrq-sqlite POST p99 (paired): {post['p99_ratio_to_sqlite']}; "
          f"CPU seconds: {cpu_s}; non-2xx or failed: {len(errors)}")
    for error in errors[:10]:
        print(f"  {error}")
    print(f"target: POST p99 < {TARGET_P99_MS:g} ms with {args.clients} clients on "
          f"PostgreSQL: {'met' if met else 'NOT met'}; load average {load_start} -> "
          f"{load_average()}")
    print(json.dumps({"bench": "pg_api_latency", "cpus": os.cpu_count(),
                      "clients": args.clients, "requests_per_client": args.requests,
                      "repeats": args.repeats, "server": settings, "figures": figures,
                      "cpu_s": cpu_s, "non_2xx": len(errors), "target_p99_ms": TARGET_P99_MS,
                      "target_met": met, "load_average": [load_start, load_average()]}))
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())
