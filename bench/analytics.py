"""Time-based analytics over many scan databases: qrq against a naive Python loop.

Data: demo scan databases (``qrq.analytics.scans.write_demo_database``: a year of traffic with
skewed templates and domains, daily and weekly rhythms, returning and cross-shard
visitors), written with 2 processes into a ``tempfile.mkdtemp()`` directory and deleted
at the end (``--keep`` keeps them; ``--data DIR`` reuses a directory written before).

Figures, all in this one run:

1. **Full computation**, 101 databases x 100,000 scans (10.1 M rows), daily buckets over
   the whole year (UTC): ``qrq.analytics.time_series`` with 2 processes as a job runs
   it (two child processes read; median of ``--repeats``) and in 1 process (the
   computation alone, in this process, as ``qrq analytics run --inline`` runs it),
   against the **naive baseline** (median of 2): the
   loop a developer writes first, one process: each database's rows in the range
   (``select`` of the six columns ``where scanned_at >= ? and scanned_at < ?``) into one
   Python loop that buckets (bisect on the same DST-correct boundaries), counts and
   collects visitor sets; per core, compare it with qrq in 1 process (or CPU seconds).
   Two more baselines in the same interleaved runs: **DuckDB** (2 threads) computing
   the same report over the same SQLite files with its sqlite scanner (when the
   ``duckdb`` and ``duckdb-extension-sqlite`` packages are installed; the extension is
   loaded from that wheel, nothing is downloaded), and the **SQLite floor** in one process
   (:func:`sqlite_floor`: each needed index read once, no bucketing, no distinct count).
   Every result is compared with qrq's: they must be identical. Ratios are paired, in
   wall time and in CPU seconds: DuckDB against qrq as a job of the same repeat, qrq in
   1 process against the floor run just before it (``--pairs`` such pairs in each
   repeat, 3 by default: single pairs move by ±0.05 with the machine's other load).
2. Other reports at 101 databases: weekly in Europe/Berlin, monthly in America/New_York,
   daily for one domain, daily for one template.
3. Scaling with the number of databases (10, 50, 101, 200 x 100,000 scans) and with the
   rows per database (20 databases x 25,000 / 50,000 / 100,000 / 200,000 scans).
4. **Cached responses**: waitress serving ``web:app`` on 127.0.0.1 with the report in the
   cache; 2,000 sequential ``GET /api/analytics/time-based`` on one keep-alive
   connection (p50/p99/max), for the daily (365 buckets) and the weekly report.

The databases stay in the OS page cache between runs (they were just written, or are
read once, untimed, when ``--data`` reuses them), so the figures are for warm files; the
first report after a reboot, or after the kernel reclaimed the cache, reads them from
disk.

Run: ``flock /tmp/qrq-bench.lock /work/venv/bin/python bench/analytics.py`` (the lock keeps
benchmarks on this shared machine from overlapping). ``--quick`` for a small smoke run;
``--dbs 30 --parts 1`` for part 1 alone on fewer databases; ``--data DIR`` keeps the
generated databases for the next run. The last line of output is one JSON object with
every figure.
"""

from __future__ import annotations

import argparse
import bisect
import datetime
import http.client
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

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

from qrq import analytics
from qrq.analytics import cache as analytics_cache
from qrq.analytics import shard
from qrq.analytics.query import parse_query, plan_buckets
from qrq.analytics.scans import write_demo_databases

END = time.time()
_LAST = datetime.datetime.fromtimestamp(END, datetime.UTC).date()
# The whole year the demo data covers, as daily buckets in UTC.
FULL = {"period": "daily", "from": str(_LAST - datetime.timedelta(days=365)), "to": str(_LAST)}


def naive_report(paths: list[Path], query) -> dict:
    """The baseline, the loop a developer writes first: per database, one ``select`` of
    the six columns over the report's time range, and every row into one Python loop
    (``bisect`` to its bucket, a set of visitor hashes per bucket, four Counters).
    One process on one core: compare it with qrq's one-process figure or CPU seconds."""
    buckets, end = plan_buckets(query)
    bounds = [b.start_ts for b in buckets] + [end]
    scans = [0] * len(buckets)
    visitors = [set() for _ in buckets]
    tops = {name: Counter() for name in analytics.DIMENSIONS}
    templates, domains, countries, devices = tops.values()
    first, last = bounds[0], bounds[-1]
    for path in paths:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        for at, template_id, domain, country, device, visitor in conn.execute(
                "select scanned_at, template_id, domain, country, device, visitor_hash "
                "from scans where scanned_at >= ? and scanned_at < ?", (first, last)):
            if query.domain is not None and domain != query.domain:
                continue
            if query.template_id is not None and template_id != query.template_id:
                continue
            i = bisect.bisect_right(bounds, at) - 1
            scans[i] += 1
            visitors[i].add(visitor)
            templates[template_id] += 1
            domains[domain] += 1
            countries[country] += 1
            devices[device] += 1
        conn.close()
    return {"series": [(b.label, scans[i], len(visitors[i])) for i, b in enumerate(buckets)],
            "top": {name: analytics._top(name, counter) for name, counter in tops.items()}}


def sqlite_floor(paths: list[Path], query) -> int:
    """The SQLite floor of the report in one process: each database's two indexes read
    once inside SQLite, nothing else: ``scans_time`` over the range, in order, and the
    top-N ``GROUP BY`` over ``scans_dims`` that qrq runs, without its time condition when
    the database lies inside the range (as qrq does: two index seeks tell). No bucketing
    and no distinct counting: no exact report through SQLite can do less. (qrq reads
    ``scans_time`` from the file's pages, at about this count's cost:
    ``bench/analytics_parts.py``.)"""
    buckets, end = plan_buckets(query)
    lo, hi = buckets[0].start_ts, end
    rows = 0
    for path in paths:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        conn.execute(f"pragma mmap_size = {shard.MMAP_BYTES}")  # as qrq reads
        # count(visitor_hash) steps through every entry in index order and looks at
        # its visitor_hash: the cheapest statement that reads the whole range (handing
        # the rows to Python instead would cost twice qrq's whole report).
        rows += conn.execute(
            "select count(visitor_hash) from scans indexed by scans_time "
            "where scanned_at >= ? and scanned_at < ?", (lo, hi)).fetchone()[0]
        _floor_dims(conn, query, lo, hi)
        conn.close()
    return rows


def _floor_dims(conn: sqlite3.Connection, query, lo: int, hi: int) -> None:
    """qrq's top-N statement, read to the end; its time condition only where the
    database's own range (min and max of ``scans_time``) is cut by the report's."""
    first, last = conn.execute("select (select min(scanned_at) from scans), "
                               "(select max(scanned_at) from scans)").fetchone()
    within = first is not None and first >= lo and last < hi
    conn.execute(shard._dims_sql(query, set(shard.INDEXES), within),
                 {"lo": lo, "hi": hi, "domain": query.domain,
                  "template_id": query.template_id}).fetchall()


def sqlite_rows_floor(paths: list[Path], query) -> int:
    """The floor as a plain reader would write it: ``select scanned_at, visitor_hash from
    scans order by scanned_at`` (over ``scans_time``) with every row handed to Python,
    plus the same top-N ``GROUP BY``."""
    buckets, end = plan_buckets(query)
    lo, hi = buckets[0].start_ts, end
    rows = 0
    for path in paths:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        conn.execute(f"pragma mmap_size = {shard.MMAP_BYTES}")
        for _ in conn.execute("select scanned_at, visitor_hash from scans where "
                              "scanned_at >= ? and scanned_at < ? order by scanned_at",
                              (lo, hi)):
            rows += 1
        _floor_dims(conn, query, lo, hi)
        conn.close()
    return rows


def duckdb_connection(threads: int):
    """DuckDB with its sqlite scanner loaded from the ``duckdb-extension-sqlite`` wheel
    (no download: this machine has no internet), or None if either is missing."""
    try:
        import duckdb
        import duckdb_extension_sqlite
    except ImportError:
        return None
    found = sorted(Path(duckdb_extension_sqlite.__file__).parent.glob(
        f"extensions/v{duckdb.__version__}/*.duckdb_extension"))
    if not found:
        return None
    # DuckDB derives the entry point from the file name: the scanner's is sqlite_scanner.
    directory = Path(tempfile.mkdtemp(prefix="qrq-bench-duckdb-"))
    shutil.copy(found[0], directory / "sqlite_scanner.duckdb_extension")
    conn = duckdb.connect(config={"threads": threads, "autoinstall_known_extensions": False})
    conn.execute(f"load '{directory / 'sqlite_scanner.duckdb_extension'}'")
    shutil.rmtree(directory, ignore_errors=True)
    return conn


def duckdb_report(conn, paths: list[Path], query) -> dict:
    """The same report computed by DuckDB over the same SQLite files (sqlite_scan of each,
    bucketed with an ASOF join on the same bucket boundaries)."""
    buckets, end = plan_buckets(query)
    conn.execute("create or replace temp table b as select * from "
                 "(values " + ", ".join(f"({i}, {b.start_ts})" for i, b in enumerate(buckets))
                 + ") t(i, lo)")
    where = f"scanned_at >= {buckets[0].start_ts} and scanned_at < {end}"
    if query.domain is not None:  # a view takes no parameters: quoted literals
        where += " and domain = '" + query.domain.replace("'", "''") + "'"
    if query.template_id is not None:
        where += f" and template_id = {int(query.template_id)}"
    scans = " union all ".join(
        "select scanned_at, visitor_hash, template_id, domain, country, device "
        "from sqlite_scan('" + str(path).replace("'", "''") + "', 'scans')" for path in paths)
    conn.execute(f"create or replace temp view s as select * from ({scans}) where {where}")
    series = dict.fromkeys(range(len(buckets)), (0, 0))
    for i, n, v in conn.execute("select b.i, count(*), count(distinct s.visitor_hash) "
                                "from s asof join b on s.scanned_at >= b.lo group by b.i"
                                ).fetchall():
        series[i] = (n, v)
    groups = conn.execute("select template_id, domain, country, device, count(*) from s "
                          "group by all").fetchall()
    tops = {name: Counter() for name in analytics.DIMENSIONS}
    for *dims, n in groups:
        for name, key in zip(analytics.DIMENSIONS, dims, strict=True):
            tops[name][key] += n
    return {"series": [(b.label, *series[i]) for i, b in enumerate(buckets)],
            "top": {name: analytics._top(name, counter) for name, counter in tops.items()}}


def same(result: dict, naive: dict) -> bool:
    ours = [(p["label"], p["scans"], p["visitors"]) for p in result["series"]]
    return ours == naive["series"] and result["top"] == naive["top"]


CPU_SECONDS: list[float] = []  # CPU time of the last timed() call, children included


def cpu_now() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def timed(fn, repeats: int) -> tuple[float, list[float], object]:
    """Median wall time of *repeats* calls; their CPU times go to CPU_SECONDS."""
    runs, value = [], None
    CPU_SECONDS.clear()
    for _ in range(repeats):
        cpu, began = cpu_now(), time.perf_counter()
        value = fn()
        runs.append(time.perf_counter() - began)
        CPU_SECONDS.append(cpu_now() - cpu)
    return median(runs), runs, value


def warm(paths: list[Path]) -> None:
    """Read every file once, untimed, so that every figure is for files in the OS page
    cache (reused ``--data`` may have been evicted since it was written)."""
    began = time.perf_counter()
    for path in paths:
        with open(path, "rb") as f:
            while f.read(1 << 20):
                pass
    print(f"  read {len(paths)} files into the page cache in "
          f"{time.perf_counter() - began:.1f} s", flush=True)


def generate(directory: Path, dbs: int, scans: int) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / f"scans-{i:03d}.db" for i in range(dbs)]
    if all(p.exists() for p in paths):
        warm(paths)
        return paths
    began = time.perf_counter()
    write_demo_databases(directory, dbs, scans, days=365, processes=2, end=END)
    size = sum(p.stat().st_size for p in paths)
    print(f"  wrote {dbs} x {scans:,} scans in {time.perf_counter() - began:.0f} s "
          f"({size / 1e9:.2f} GB)", flush=True)
    return paths


def as_a_job(paths: list[Path], query) -> dict:
    """The report as an analytics job computes it (``QRQ_ANALYTICS_PROCESSES=2``): two
    child processes read, this process waits and merges."""
    return analytics.time_series(paths, query, processes=2, here=False)


def peak_memory(paths: list[Path], which: str) -> dict[str, int]:
    """Peak RSS (MB) of one full computation, in a fresh process (and its children)."""
    code = ("import json, resource, sys; sys.path.insert(0, 'bench'); "
            "from pathlib import Path; from qrq import analytics; "
            "from qrq.analytics.query import parse_query; import analytics as bench; "
            f"paths = [Path(p) for p in {[str(p) for p in paths]!r}]; "
            f"query = parse_query({FULL!r}); "
            + ("bench.as_a_job(paths, query); " if which == "qrq" else
               "bench.naive_report(paths, query); ")
            # VmHWM, not ru_maxrss: a forked process inherits its parent's ru_maxrss.
            + "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')]; "
              "print(json.dumps({'self_mb': int(hwm[0].split()[1]) // 1024, "
              "'child_mb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024}))")
    done = subprocess.run([PYTHON, "-c", code], cwd=REPO, capture_output=True, text=True,
                          check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def cached_latency(data: Path, dbs_dir: Path, requests: int) -> dict:
    """p50/p99 of cached answers over HTTP (waitress, 127.0.0.1)."""
    from qrq.config import load_settings
    from qrq.queue.sqlite_storage import LeasedSqliteStorage

    shutil.rmtree(data, ignore_errors=True)  # a fresh web data directory, also with --data
    data.mkdir(parents=True)
    env = env_for(data, QRQ_ANALYTICS_DBS=str(dbs_dir))
    qrq_cli(data, "init")
    token = qrq_cli(data, "users", "create", "bench").strip().splitlines()[-1]
    settings = load_settings(env)
    storage = LeasedSqliteStorage("qrq", str(settings.queue_db))
    reports = {"daily": FULL, "weekly": {**FULL, "period": "weekly", "tz": "Europe/Berlin"}}
    for args in reports.values():
        analytics_cache.compute_report(storage, settings, parse_query(args))
    storage.close()
    port = free_port()
    log = data / "waitress.log"
    server = start([PYTHON, "-m", "waitress", f"--listen=127.0.0.1:{port}", "--threads=8",
                    "web:app"], log, cwd=REPO, env=env)
    figures = {}
    try:
        wait_for_text(log, "Serving on", server, timeout=30)
        for name, args in reports.items():
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            path = "/api/analytics/time-based?" + "&".join(f"{k}={v}" for k, v in args.items())
            headers = {"Authorization": f"Bearer {token}"}
            latency, size = [], 0
            for i in range(requests + 50):
                began = time.perf_counter()
                conn.request("GET", path, headers=headers)
                response = conn.getresponse()
                body = response.read()
                if i >= 50:  # the first 50 warm the server up
                    latency.append((time.perf_counter() - began) * 1000)
                if response.status != 200:
                    raise RuntimeError(f"{path}: {response.status} {body[:200]!r}")
                size = len(body)
            conn.close()
            figures[name] = {"p50_ms": round(percentile(latency, 50), 2),
                             "p99_ms": round(percentile(latency, 99), 2),
                             "max_ms": round(max(latency), 2), "bytes": size,
                             "requests": len(latency)}
    finally:
        stop(server)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--pairs", type=int, default=3,
                        help="floor and qrq in 1 process, back to back, this many times "
                             "in each repeat (default 3): the ratio the target is about, "
                             "from more pairs than the slower baselines need")
    parser.add_argument("--quick", action="store_true",
                        help="small data (12 x 20,000 scans) to check the script")
    parser.add_argument("--data", type=Path, help="reuse (or keep) the databases here")
    parser.add_argument("--keep", action="store_true", help="keep the generated data")
    parser.add_argument("--dbs", type=int, default=101,
                        help="databases in parts 1 and 2 (default 101)")
    parser.add_argument("--scans", type=int, default=100_000,
                        help="scans per database (default 100,000)")
    parser.add_argument("--parts", default="1234",
                        help="which parts to run after part 1, e.g. 1 or 14 (default 1234)")
    args = parser.parse_args(argv)
    root = args.data or Path(tempfile.mkdtemp(prefix="qrq-bench-analytics-"))
    scans, full_dbs, db_counts = args.scans, args.dbs, [10, 50, 101, 200]
    row_counts = [25_000, 50_000, 100_000, 200_000]
    if args.quick:
        scans, full_dbs, db_counts, row_counts = 20_000, 12, [3, 6, 12], [5_000, 20_000]
    if "3" not in args.parts:
        db_counts = [full_dbs]
    print(f"machine: {os.cpu_count()} CPUs, load average {load_average()}; "
          f"sqlite {sqlite3.sqlite_version}; data in {root}", flush=True)
    summary: dict = {"bench": "analytics", "cpus": os.cpu_count(),
                     "load_average": [load_average()]}
    try:
        print("generating", flush=True)
        paths = generate(root / "main", max(db_counts + [full_dbs]), scans)
        full = paths[:full_dbs]
        query = parse_query(FULL)

        # 1. The full computation against the naive loop, interleaved so that changes
        # in the machine's load hit both alike.
        duck = duckdb_connection(2)
        runs = {name: [] for name in ("qrq_2", "qrq_1", "floor", "floor_rows", "duckdb",
                                      "naive")}
        cpu = {name: [] for name in runs}
        checks = {}

        def measure(name, fn):
            seconds, _, value = timed(fn, 1)
            runs[name].append(seconds)
            cpu[name] += CPU_SECONDS
            return value

        for i in range(args.repeats):
            result = measure("qrq_2", lambda: as_a_job(full, query))
            for _ in range(args.pairs):
                measure("floor", lambda: sqlite_floor(full, query))
                measure("qrq_1", lambda: analytics.time_series(full, query, processes=1))
            if i < 2:
                measure("floor_rows", lambda: sqlite_rows_floor(full, query))
                checks["naive"] = same(result, measure("naive",
                                                       lambda: naive_report(full, query)))
            # Last: DuckDB's threads go on spending CPU (~0.02 s) after its answer, which
            # os.times() charges to whatever runs next; here that is qrq, not the floor.
            if duck is not None:
                checks["duckdb"] = same(result, measure(
                    "duckdb", lambda: duckdb_report(duck, full, query)))
        med = {name: median(values) for name, values in runs.items() if values}
        cpus, cpu = cpu, {name: median(values) for name, values in cpu.items() if values}
        # Paired: each qrq (1 process) against the floor run just before it, and qrq as a
        # job against DuckDB of the same repeat, in wall time and in CPU time (on a loaded
        # machine the wall time is mostly waiting).
        def paired(a: str, b: str, of: dict) -> float | None:
            return median([x / y for x, y in zip(of[a], of[b], strict=True)]) \
                if of[a] and of[b] else None

        floor_ratio, floor_cpu = paired("qrq_1", "floor", runs), paired("qrq_1", "floor", cpus)
        duck_ratio, duck_cpu = paired("duckdb", "qrq_2", runs), paired("duckdb", "qrq_2", cpus)
        ours2, ours1, naive = med["qrq_2"], med["qrq_1"], med["naive"]
        memory = {name: peak_memory(full, name) for name in ("qrq", "naive")}
        identical = all(checks.values())
        visitors = sum(p["visitors"] for p in result["series"])
        rows = result["totals"]["scans"]
        labels = {"qrq_2": "qrq, 2 processes", "qrq_1": "qrq, 1 process",
                  "floor": "SQLite floor, 1 process", "duckdb": "DuckDB, 2 threads",
                  "floor_rows": "rows into Python, 1 process",
                  "naive": "naive loop"}
        print(f"\n1. {full_dbs} databases x {scans:,} scans = {rows / 1e6:.1f} M rows, daily "
              f"buckets over a year ({len(result['series'])}), UTC")
        for name, values in runs.items():
            if values:
                print(f"   {labels[name]:<26} median {med[name]:6.2f} s  CPU {cpu[name]:6.2f} s"
                      "  (runs " + ", ".join(f"{r:.2f}" for r in values) + ")")
        if duck is None:
            print("   DuckDB: not measured (pip install duckdb duckdb-extension-sqlite)")
        print(f"   naive / qrq: {naive / ours2:.1f}x (2 processes), {naive / ours1:.1f}x "
              f"(1 process), {cpu['naive'] / cpu['qrq_2']:.1f}x in CPU seconds")
        print(f"   qrq 1 process / SQLite floor (paired): {floor_ratio:.2f}x wall, "
              f"{floor_cpu:.2f}x CPU; "
              + (f"DuckDB / qrq 2 processes (paired): {duck_ratio:.2f}x wall, "
                 f"{duck_cpu:.2f}x CPU; " if duck else "")
              + f"results identical: {checks}; sum of daily unique visitors {visitors:,}")
        print(f"   peak RSS: qrq {memory['qrq']['self_mb']} MB in the job's process and "
              f"{memory['qrq']['child_mb']} MB in the largest child; naive loop "
              f"{memory['naive']['self_mb']} MB")
        summary.update({
            "full": {"dbs": full_dbs, "scans_per_db": scans, "rows": rows,
                     "buckets": len(result["series"]),
                     "qrq_2_processes_s": round(ours2, 3), "qrq_1_process_s": round(ours1, 3),
                     "naive_s": round(naive, 3),
                     "floor_s": round(med["floor"], 3),
                     "floor_rows_s": round(med["floor_rows"], 3),
                     "duckdb_s": round(med["duckdb"], 3) if duck else None,
                     "runs": {name: [round(r, 3) for r in values]
                              for name, values in runs.items()},
                     "speedup": round(naive / ours2, 1),
                     "speedup_1_process": round(naive / ours1, 1),
                     "speedup_cpu": round(cpu["naive"] / cpu["qrq_2"], 1),
                     "qrq_1_vs_floor": round(floor_ratio, 2),
                     "qrq_1_vs_floor_cpu": round(floor_cpu, 2),
                     "qrq_1_vs_floor_rows": round(ours1 / med["floor_rows"], 2),
                     "duckdb_vs_qrq_2": round(duck_ratio, 2) if duck else None,
                     "duckdb_vs_qrq_2_cpu": round(duck_cpu, 2) if duck else None,
                     "identical": checks,
                     "cpu_s": {name: round(v, 3) for name, v in cpu.items()},
                     "peak_rss_mb": memory},
            "target_full_under_10s": ours2 < 10,
            "target_ahead_of_duckdb": bool(duck) and duck_ratio > 1 and duck_cpu > 1,
            "target_floor_1_2x": floor_ratio <= 1.2 and floor_cpu <= 1.2})

        if "2" in args.parts:
            # 2. Other reports over the same databases.
            domain = result["top"]["domains"][0]["domain"]
            template = result["top"]["templates"][0]["template_id"]
            variants = {
                "weekly Europe/Berlin": {**FULL, "period": "weekly", "tz": "Europe/Berlin"},
                "monthly America/New_York": {**FULL, "period": "monthly",
                                             "tz": "America/New_York"},
                f"daily, domain {domain}": {**FULL, "domain": domain},
                f"daily, template {template}": {**FULL, "template_id": str(template)},
            }
            print(f"\n2. other reports over {full_dbs} databases, 2 processes (median of "
                  f"{args.repeats})")
            summary["variants"] = {}
            for name, variant in variants.items():
                seconds, _, report = timed(
                    lambda v=variant: as_a_job(full, parse_query(v)),
                    args.repeats)
                print(f"   {name:<36} {seconds:6.2f} s  ({report['totals']['scans']:,} scans, "
                      f"{len(report['series'])} buckets)")
                summary["variants"][name] = round(seconds, 3)

        if "3" in args.parts:
            # 3. Scaling with the number of databases and the rows per database.
            print(f"\n3a. databases x {scans:,} scans, daily over a year, 2 processes (median "
                  f"of {args.repeats})")
            summary["by_dbs"] = {}
            for count in db_counts:
                seconds, _, _ = timed(
                    lambda c=count: as_a_job(paths[:c], query),
                    args.repeats)
                print(f"   {count:>4} databases  {seconds:6.2f} s   "
                      f"{count * scans / seconds / 1e6:5.1f} M rows/s")
                summary["by_dbs"][count] = round(seconds, 3)
            print(f"3b. 20 databases x scans per database, 2 processes (median of "
                  f"{args.repeats})")
            summary["by_rows"] = {}
            for count in row_counts:
                if count == scans:
                    subset = paths[:20]
                else:
                    directory = root / f"rows-{count}"
                    print(f"  generating 20 x {count:,}", flush=True)
                    subset = generate(directory, 20, count)
                seconds, _, _ = timed(
                    lambda s=subset: as_a_job(s, query), args.repeats)
                print(f"   {count:>8,} scans/db  {seconds:6.2f} s   "
                      f"{20 * count / seconds / 1e6:5.1f} M rows/s")
                summary["by_rows"][count] = round(seconds, 3)

        if "4" in args.parts:
            # 4. Cached answers over HTTP.
            print("\n4. cached GET /api/analytics/time-based over HTTP (waitress, 127.0.0.1, "
                  "one keep-alive connection)", flush=True)
            latency = cached_latency(root / "web", root / "main", 400 if args.quick else 2000)
            for name, figures in latency.items():
                print(f"   {name:<8} p50 {figures['p50_ms']:.2f} ms  "
                      f"p99 {figures['p99_ms']:.2f} ms  max {figures['max_ms']:.1f} ms  "
                      f"({figures['bytes']:,} bytes, "
                      f"{figures['requests']} requests)")
            summary["cached"] = latency
            summary["target_cached_p99_under_10ms"] = all(
                f["p99_ms"] < 10 for f in latency.values())

    finally:
        if args.keep or args.data:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    summary["load_average"].append(load_average())
    print(f"load average at the end: {summary['load_average'][-1]}")
    print(json.dumps(summary))
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
