"""CPU-bound PDF jobs on one worker "host" vs two, each pinned to one core, on one
PostgreSQL database; plus what each host costs the database.

Starts a private PostgreSQL cluster (``.ci/postgres start``, then restarted with
``pg_stat_statements`` loaded), creates the demo templates (``qrq init --demo``), then
for 1 and then 2 hosts: enqueues ``--jobs`` PDF jobs of ``--copies`` cards, starts one
``huey_consumer huey_app.huey -w 1 -k process`` per host under ``taskset -c N`` (host N on
core N), and times the drain from the first job's start to the last one's end (the job
records' times). The hosts share a data directory here (the templates are in the app
database, which is SQLite in a data directory until it moves to PostgreSQL too).

During the two-host run it samples ``pg_stat_activity`` (connections per
``application_name``: each host and a ``qrq serve`` web process get their own) and the
server's CPU (the postgres processes' CPU time); ``pg_stat_statements`` gives each
statement's calls and execution time per job. The last line of output is one JSON
object with every figure.

Run: ``flock /tmp/qrq-bench.lock .venv/bin/python bench/hosts.py`` (``--jobs 40`` for a
quick look).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from _proc import exit_on_sigterm
from _support import PYTHON, REPO, env_for, free_port, load_average, start, stop

HUEY_CONSUMER = str(Path(sys.executable).parent / "huey_consumer")


def pg_bindir() -> Path:
    return Path(sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1])


def as_postgres(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


def with_app(url: str, name: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}application_name={name}"


def postgres_cpu_seconds(cluster: Path) -> float:
    """CPU time (user + system) of the server's processes: the postmaster and its children."""
    postmaster = int((cluster / "data" / "postmaster.pid").read_text().split()[0])
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry) == postmaster or int(fields[1]) == postmaster:
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def drain(db, submit, template_id, args, hosts: int, url: str, data: Path, work: Path,
          sample=None) -> dict:
    ids = [submit("pdf.generate", template_id, {"copies": args.copies}, owner_id=None)
           for _ in range(args.jobs)]
    procs = [start(["taskset", "-c", str(core), HUEY_CONSUMER, "huey_app.huey", "-w", "1",
                    "-k", "process", "-n"], work / f"host{core}.log", cwd=REPO,
                   env=env_for(data, QRQ_DATABASE_URL=with_app(url, f"worker-host-{core}")))
             for core in range(hosts)]
    sampled = None
    # The driver's own statements use "= any(...)", a shape qrq never sends, so they are
    # left out of the per-job statement figures.
    count_ended = ("select count(*) from job where id = any(%s) "
             "and status in ('finished', 'failed', 'canceled', 'expired')")
    try:
        deadline = time.monotonic() + 1800
        while True:
            done = db.execute(count_ended, (ids,)).fetchone()[0]
            if sampled is None and sample is not None and done >= len(ids) // 2:
                sampled = sample()
            if done == len(ids):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{done}/{len(ids)} jobs ended in time")
            time.sleep(0.2)
    finally:
        for proc in procs:
            stop(proc)
    records = [dict(zip(("status", "started_at", "finished_at", "error"), row, strict=True))
               for row in
               db.execute("select status, started_at, finished_at, error from job "
                          "where id = any(%s)", (ids,)).fetchall()]
    failed = [r for r in records if r["status"] != "finished"]
    if failed:
        raise RuntimeError(f"{len(failed)} jobs did not finish: {failed[0]['error']}")
    began = min(r["started_at"] for r in records)
    ended = max(r["finished_at"] for r in records)
    return {"hosts": hosts, "jobs": len(ids), "seconds": round(ended - began, 2),
            "jobs_per_second": round(len(ids) / (ended - began), 2), "sampled": sampled}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=120)
    parser.add_argument("--copies", type=int, default=24, help="cards per PDF")
    args = parser.parse_args()
    exit_on_sigterm()
    work = Path(tempfile.mkdtemp(prefix="qrq-bench-hosts-"))
    work.chmod(0o755)
    cluster = work / "cluster"
    url = subprocess.run([str(REPO / ".ci" / "postgres"), "start", str(cluster)],
                         check=True, capture_output=True, text=True).stdout.strip()
    web = None
    try:
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("alter system set shared_preload_libraries = 'pg_stat_statements'")
        # The restarted server keeps the output it is given: a log file, not a pipe.
        subprocess.run(as_postgres([str(pg_bindir() / "pg_ctl"), "-D", str(cluster / "data"),
                                    "-l", str(cluster / "server.log"), "-w", "-m", "fast",
                                    "restart"]),
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        admin = psycopg.connect(url, autocommit=True)
        admin.execute("create extension if not exists pg_stat_statements")
        data = work / "data"
        env = env_for(data, QRQ_DATABASE_URL=with_app(url, "bench"))
        subprocess.run([PYTHON, "-m", "qrq", "init", "--demo"], cwd=REPO, env=env,
                       check=True, capture_output=True)
        os.environ.update({k: v for k, v in env.items() if k.startswith("QRQ_")})
        sys.path.insert(0, str(REPO))
        from qrq.config import load_settings
        from qrq.queue import huey, submit

        huey.init(load_settings())
        port = free_port()
        web = start([PYTHON, "-m", "qrq", "serve", "--port", str(port)], work / "web.log",
                    cwd=REPO, env=env_for(data, QRQ_DATABASE_URL=with_app(url, "web-host")))

        def connections() -> dict:
            for _ in range(20):  # a few requests, so the web host holds what it needs
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5).read()
                except OSError:
                    time.sleep(0.25)
            rows = admin.execute("select application_name, count(*) from pg_stat_activity "
                                 "where datname is not null group by 1 order by 1").fetchall()
            return dict(rows)

        one = drain(admin, submit, 1, args, 1, url, data, work)
        admin.execute("select pg_stat_statements_reset()")
        cpu_before, wall_before = postgres_cpu_seconds(cluster), time.monotonic()
        two = drain(admin, submit, 1, args, 2, url, data, work,
                    sample=connections)
        pg_cpu = postgres_cpu_seconds(cluster) - cpu_before
        wall = time.monotonic() - wall_before
        rows = admin.execute(
            "select calls, total_exec_time, left(regexp_replace(query, '\\s+', ' ', 'g'), 90) "
            "from pg_stat_statements where query not like '%%= any(%%' and query not like "
            "'%%pg_stat%%' order by total_exec_time desc").fetchall()
        per_job_ms = sum(r[1] for r in rows) / args.jobs
        statements = [{"calls_per_job": round(c / args.jobs, 2),
                       "ms_per_call": round(t / c, 4) if c else 0.0, "query": q}
                      for c, t, q in rows[:12]]
        result = {
            "bench": "hosts", "copies": args.copies, "jobs": args.jobs,
            "one_host_jobs_per_second": one["jobs_per_second"],
            "two_hosts_jobs_per_second": two["jobs_per_second"],
            "ratio": round(two["jobs_per_second"] / one["jobs_per_second"], 2),
            "connections_mid_run": two["sampled"],
            "postgres_cpu_share_of_a_core": round(pg_cpu / wall, 3),
            "postgres_cpu_ms_per_job": round(1000 * pg_cpu / args.jobs, 2),
            "statement_exec_ms_per_job": round(per_job_ms, 3),
            "statements_per_job": round(sum(r[0] for r in rows) / args.jobs, 1),
            "top_statements": statements, "load": load_average(),
        }
        admin.close()
    finally:
        stop(web)
        subprocess.run([str(REPO / ".ci" / "postgres"), "stop", str(cluster)], check=False)
    for key, value in result.items():
        if key != "top_statements":
            print(f"{key}: {value}")
    for row in result["top_statements"]:
        print(f"  {row['calls_per_job']:>7} calls/job {row['ms_per_call']:>8} ms  {row['query']}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
