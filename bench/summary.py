"""Run every benchmark in bench/ with its baseline and print the summary table.

Each script runs as its own process (one at a time, each under the benchmark lock,
``/tmp/qrq-bench.lock``, so other benchmarks on a shared machine do not overlap it),
its output goes to ``LOGS/<name>.log`` and its last line, one JSON object, into
``LOGS/results.json``; then one Markdown table, the shape of the summary in
BENCHMARKS.md, is printed: what each measures, its baseline, the latest figures, the
target and whether it is met.

``--quick`` runs each with small sizes (a few minutes in all): a smoke run that every
script and its baseline still work, whose figures are noisier than a full run's.

The PostgreSQL benchmarks (``pg_*``) share one server: ``--database-url`` names one (a
superuser's URL: they create and drop ``qrq_bench_*`` databases on it), else one private
cluster (``.ci/postgres start``) is started for all of them, not one each (an initdb and
a start each cost tens of seconds on a loaded machine). On a shared server the
benchmarks cannot count the server's CPU time.

Run: ``make bench`` (or ``make bench QUICK=1``), or
``.venv/bin/python bench/summary.py [--quick] [--only api_latency,drain] [--logs DIR]``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
POSTGRES = BENCH.parent / ".ci" / "postgres"
LOCK = os.environ.get("QRQ_BENCH_LOCK", "/tmp/qrq-bench.lock")

# name -> (script, full-run arguments, quick arguments)
RUNS = {
    "render": ("render.py", [], ["--repeats", "3", "--single-pages", "20",
                                 "--grid-pages", "10"]),
    "batch": ("batch.py", [], ["--items", "1000", "--repeats", "1", "--small", "200",
                               "--naive-items", "200"]),
    "api_latency": ("api_latency.py", [], ["-n", "30", "--repeats", "1"]),
    "api_latency_worker": ("api_latency.py", ["--worker"],
                           ["--worker", "-n", "30", "--repeats", "1"]),
    "pickup": ("pickup.py", ["--samples", "100"], ["--idle", "3", "--samples", "10",
                                                   "--spacing", "0.3", "0.6"]),
    "drain": ("drain.py", ["--repeats", "5"], ["--jobs", "500", "--repeats", "1"]),
    "rate": ("rate.py", [], ["--repeats", "1", "--seconds", "8", "--idle", "4"]),
    "footprint": ("footprint.py", [], ["--repeats", "1", "--settle", "3"]),
    "soak": ("soak.py", [], ["--jobs", "500", "--sample", "5"]),
    "recovery": ("recovery.py", [], ["--leases", "5", "--repeats", "1",
                                     "--stock-repeats", "1", "--stock-wait", "10"]),
    "ops_scrape": ("ops_scrape.py", [], ["--sizes", "10000", "--repeats", "10"]),
    "bulk_retry": ("bulk_retry.py", [], ["--jobs", "1000", "--repeats", "3"]),
    "analytics": ("analytics.py", [], ["--quick", "--parts", "1", "--repeats", "3"]),
    "backup": ("backup.py", ["--read-mbps", "200"], ["--gib", "0.05", "--repeats", "1",
                                                     "--quick", "--no-cold"]),
    "pg_queues": ("pg_queues.py", [], ["--jobs", "100", "--pdf-jobs", "4", "--repeats", "1"]),
    "pg_pickup": ("pg_pickup.py", [], ["--idle", "3", "--samples", "10"]),
    "pg_api_latency": ("pg_api_latency.py", [], ["-n", "20", "--repeats", "1"]),
}


def _fmt(value, unit: str = "", digits: int = 1) -> str:
    if value is None:
        return "—"
    return f"{value:,.{digits}f}{unit}"


def _met(flag) -> str:
    return {True: "yes", False: "no", None: "—"}[flag if flag in (True, False) else None]


# Each row: (what, baseline, latest, target, met?) from a script's JSON.

def _render(r):
    cases = r.get("cases", {})
    return ("PDF pages/s", "naive PNG-per-code PDF",
            ", ".join(f"{_fmt(c['speed_ratio'], 'x', 2)} ({n})" for n, c in cases.items()),
            f"≥ {r.get('target_speed_ratio', 5):g}x naive",
            _met(r.get("speed_target_met") and r.get("every_sampled_page_decodable")))


def _batch(r):
    rate = r.get("qrq_items_per_s_median")
    return (f"{r.get('items', 0):,} codes, one batch", "naive PNG pipeline",
            f"{_fmt(r.get('qrq_wall_s_median'), ' s')} ({_fmt(rate, ' items/s', 0)}), "
            f"{_fmt(r.get('qrq_worker_peak_rss_mb'), ' MB', 0)} RSS; naive "
            f"{_fmt(r.get('naive_items_per_s'), ' items/s', 0)}",
            "10,000 codes < 60 s", _met(rate is not None and 10_000 / rate < 60))


def _api(r):
    worker = r.get("consumer")
    return (f"POST p99, {r.get('clients')} clients" + (", consumer rendering" if worker else ""),
            "`GET /api/me`",
            f"POST {_fmt(r.get('generate_p99_ms'), ' ms')}, status "
            f"{_fmt(r.get('status_p99_ms'), ' ms')} (me {_fmt(r.get('me_p99_ms'), ' ms')}); "
            f"load {r.get('load_average', ['?'])[0]}",
            f"< {r.get('target_p99_ms', 50):g} ms", _met(r.get("target_met")))


def _pickup(r):
    q, s = r.get("qrq", {}), r.get("stock", {})
    return ("idle consumer pickup p99", "stock `SqliteHuey`",
            f"{_fmt(q.get('p99_ms'), ' ms')} vs {_fmt(s.get('p99_ms'), ' ms')}",
            f"< {r.get('target_p99_ms', 100):g} ms", _met(r.get("target_met")))


def _drain(r):
    parts, rate_met, wal_met = [], [], []
    for key, m in sorted(r.get("results", {}).items()):
        q = m["qrq"]
        parts.append(f"{key}: qrq {_fmt(q['paired_ratio_to_stock_normal'], 'x', 2)}, CPU "
                     f"{_fmt(q['cpu_ms_per_job'] / m['stock-normal']['cpu_ms_per_job'], 'x', 2)}"
                     f", WAL max {_fmt(q['wal_max_mb'], ' MB')} (after "
                     f"{_fmt(q['wal_after_mb'], ' MB')})")
        rate_met.append(q["paired_ratio_to_stock_normal"] >= 0.9)
        wal_met.append(q["wal_max_mb"] <= 16 and q["wal_after_mb"] <= 4)
    return ("no-op jobs/s, CPU/job and WAL peak vs stock (paired)",
            "stock `SqliteHuey` (synchronous NORMAL)", "; ".join(parts),
            "≥ 0.9x stock; WAL ≤ 16 MB, ≤ 4 MB after",
            f"rate {_met(all(rate_met) if rate_met else None)}, "
            f"WAL {_met(all(wal_met) if wal_met else None)}")


def _rate(r):
    paired = r.get("paired", {})
    qrq, stock = paired.get("qrq_w4_over_w1", {}), paired.get("stock_w4_over_w1", {})
    return (f"CPU/job at {r.get('rate', '?'):g} jobs/s, 4 workers / 1", "stock `SqliteHuey`",
            f"qrq {_fmt(qrq.get('cpu_ms_per_job'), 'x', 2)} (idle CPU "
            f"{_fmt(qrq.get('idle_cpu_pct'), 'x', 2)}) vs stock "
            f"{_fmt(stock.get('cpu_ms_per_job'), 'x', 2)} "
            f"({_fmt(stock.get('idle_cpu_pct'), 'x', 2)})",
            "≤ 1x", _met(qrq.get("cpu_ms_per_job", 99) <= 1.0 if qrq else None))


def _footprint(r):
    q, s = r.get("results", {}).get("qrq", {}), r.get("results", {}).get("stock", {})
    after = q.get("pss_after_reports_mb")
    return ("default consumer at rest, PSS summed", "huey's default consumer",
            f"{_fmt(q.get('pss_mb'), ' MB')} ({_fmt(q.get('rss_mb'), ' MB', 0)} RSS, "
            f"{q.get('processes')} processes) vs {_fmt(s.get('pss_mb'), ' MB')}"
            + (f"; {_fmt(after, ' MB')} after analytics reports" if after else ""),
            "PSS < 100 MB", _met(r.get("target_met")))


def _soak(r):
    ok = r.get("http_5xx") == 0 and r.get("not_finished_count") == 0
    wal = r.get("wal_bytes", {})
    return (f"{r.get('jobs', 0):,} PDF jobs through HTTP", "—",
            f"WAL peak {_fmt(wal.get('peak', wal.get('max', 0)) / 1e6, ' MB')}, queue.db "
            f"{_fmt(r.get('queue_db_bytes', {}).get('end', 0) / 1e6, ' MB')}, "
            f"{r.get('http_5xx')} 5xx, POST p99 {_fmt(r.get('post_ms', {}).get('p99'), ' ms')}",
            "flat, 0 errors", _met(ok))


def _recovery(r):
    qrq = r.get("qrq", {})
    lost = sum(m["lost"] for m in qrq.values())
    return ("kill -9 mid-job", "stock `SqliteHuey`",
            "; ".join(f"lease {k} s: re-run after {_fmt(m['rerun_after_kill_s'], ' s')}"
                      for k, m in qrq.items())
            + f"; stock loses {r.get('stock', {}).get('lost')}/"
              f"{r.get('stock', {}).get('killed')}",
            "re-run", _met(bool(qrq) and lost == 0))


def _ops(r):
    results = r.get("results", {})
    parts = [f"{int(n):,} jobs: {_fmt(f['metrics']['median_ms'], ' ms')}"
             for n, f in results.items()]
    worst = max((f["metrics"]["median_ms"] for f in results.values()), default=None)
    return ("`/metrics` median", "`GET /healthz`", "; ".join(parts),
            "< 1 s (a 15 s scrape)", _met(worst is not None and worst < 1000))


def _bulk_retry(r):
    def pair(key: str) -> str:
        return (f"{_fmt(r.get(f'chunked{key}'), ' s', 2)} vs "
                f"{_fmt(r.get(f'one_by_one{key}'), ' s', 2)}")

    return (f"retry {r.get('jobs', 0):,} failed jobs at once", "`huey.retry` per job",
            f"{pair('_s')} ({_fmt(r.get('paired_speedup'), 'x')} paired; CPU "
            f"{pair('_cpu_s')})", "—", "—")


def _analytics(r):
    f = r.get("full", {})
    duck = f.get("duckdb_vs_qrq_2")
    return (f"{f.get('dbs')} × {f.get('scans_per_db', 0):,} scans, daily report",
            "naive loop; DuckDB; SQLite floor",
            f"{_fmt(f.get('qrq_2_processes_s'), ' s', 2)}; naive (one process) "
            f"{_fmt(f.get('speedup_1_process'), 'x')} slower than qrq in one process "
            f"({_fmt(f.get('speedup'), 'x')} against qrq on 2 processes); DuckDB "
            f"{_fmt(duck, 'x', 2) + ' slower' if duck else 'not run'}; 1 process "
            f"{_fmt(f.get('qrq_1_vs_floor'), 'x', 2)} the floor "
            f"({_fmt(f.get('qrq_1_vs_floor_cpu'), 'x', 2)} in CPU)",
            "ahead of DuckDB; ≤ 1.2x floor",
            f"DuckDB {_met(r.get('target_ahead_of_duckdb'))}, "
            f"floor {_met(r.get('target_floor_1_2x'))}")


def _backup(r):
    versus = r.get("versus_cp", {})
    parts = [f"{mode} {_fmt(100 * versus[k], '%')}" for mode in ("warm", "cold", "limited")
             if (k := f"backup_{mode}_vs_cp_sync_{mode}") in versus]
    best = max((versus[k] for k in versus if k.startswith("backup_")
                and k.endswith(("cold", "limited"))), default=None)
    return (f"first full backup of {_fmt(r.get('bytes', 0) / 2**30, ' GiB', 2)}",
            "`cp` + `sync`", ", ".join(parts), "≥ 50% of `cp`",
            _met(best >= 0.5 if best is not None else None))


def _pg_queues(r):
    noop = r.get("noop", {})
    parts = [f"{name} {_fmt(m['jobs_per_s_after_first'], '/s', 0)} "
             f"({_fmt(m['paired_ratio_jobs_per_s_after_first'], 'x', 2)})"
             for name, m in noop.items()]
    return ("no-op drain on PostgreSQL (after first pickup)", "procrastinate, same server",
            ", ".join(parts) + f"; load {r.get('load_average', ['?'])[0]}",
            "qrq-pg ≥ procrastinate", _met(r.get("target_met")))


def _pg_pickup(r):
    systems = r.get("systems", {})
    return ("idle pickup p99 on PostgreSQL", "qrq-sqlite, procrastinate, PgQueuer",
            ", ".join(f"{n} {_fmt(f['p99'], ' ms')}" for n, f in systems.items())
            + f"; qrq-pg idle CPU {_fmt(r.get('idle_cpu_percent'), '%', 2)}; "
              f"load {r.get('load_average', ['?'])[0]}",
            f"< {r.get('target_p99_ms', 20):g} ms, idle < 1%", _met(r.get("target_met")))


def _pg_api(r):
    f = r.get("figures", {})
    pg, lite = f.get("qrq-pg", {}), f.get("qrq-sqlite", {})
    return (f"POST p99 on PostgreSQL, {r.get('clients')} clients", "qrq-sqlite; `GET /api/me`",
            f"{_fmt(pg.get('generate', {}).get('p99_ms'), ' ms')} vs SQLite "
            f"{_fmt(lite.get('generate', {}).get('p99_ms'), ' ms')} (me "
            f"{_fmt(pg.get('me', {}).get('p99_ms'), ' ms')}); "
            f"load {r.get('load_average', ['?'])[0]}",
            f"< {r.get('target_p99_ms', 50):g} ms", _met(r.get("target_met")))


ROWS = {"render": _render, "batch": _batch, "api_latency": _api,
        "api_latency_worker": _api, "pickup": _pickup, "drain": _drain,
        "rate": _rate,
        "footprint": _footprint, "soak": _soak,
        "recovery": _recovery, "ops_scrape": _ops, "bulk_retry": _bulk_retry,
        "analytics": _analytics,
        "backup": _backup, "pg_queues": _pg_queues, "pg_pickup": _pg_pickup,
        "pg_api_latency": _pg_api}


@contextlib.contextmanager
def bench_lock():
    """The machine-wide benchmark lock, held while one script runs (none if LOCK is empty)."""
    if not LOCK:
        yield
        return
    with open(LOCK, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def postgres(database_url: str, needed: bool, logs: Path):
    """The URL of the server the pg_* benchmarks share: *database_url*, else a private
    cluster started here and stopped at the end ("" when none is *needed*)."""
    if database_url or not needed:
        yield database_url
        return
    work = Path(tempfile.mkdtemp(prefix="qrq-bench-postgres-"))
    work.chmod(0o755)  # the server runs as the postgres user, which must reach it
    cluster = work / "cluster"
    url = subprocess.run([str(POSTGRES), "start", str(cluster)], check=True,
                         capture_output=True, text=True).stdout.strip()
    print(f"PostgreSQL for the pg_* benchmarks: a private cluster at {url}", flush=True)
    try:
        yield url
    finally:
        subprocess.run([str(POSTGRES), "stop", str(cluster)], check=False,
                       capture_output=True)
        with contextlib.suppress(OSError):
            work.rmdir()


def run(name: str, quick: bool, logs: Path, database_url: str = "") -> dict:
    script, full, small = RUNS[name]
    cmd = [sys.executable, str(BENCH / script), *(small if quick else full)]
    if name.startswith("pg_") and database_url:
        cmd += ["--database-url", database_url]
    log = logs / f"{name}.log"
    print(f"{name}: {' '.join(cmd[1:])} > {log}", flush=True)
    with bench_lock(), open(log, "w") as out:
        began = time.perf_counter()
        done = subprocess.run(cmd, cwd=BENCH.parent, stdout=out, stderr=subprocess.STDOUT,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})
        seconds = time.perf_counter() - began
    lines = [line for line in log.read_text(errors="replace").splitlines()
             if line.startswith("{")]
    try:
        result = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        result = {}
    print(f"  {'ok' if result else 'FAILED'} in {seconds:.0f} s (exit {done.returncode})",
          flush=True)
    return {"name": name, "exit": done.returncode, "seconds": round(seconds, 1),
            "result": result}


def table(results: list[dict]) -> str:
    lines = ["| benchmark | what | baseline | latest | target | met? |",
             "| --- | --- | --- | --- | --- | --- |"]
    for entry in results:
        if not entry["result"]:
            lines.append(f"| `{entry['name']}` | failed (exit {entry['exit']}) | | | | no |")
            continue
        try:
            cells = ROWS[entry["name"]](entry["result"])
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
            cells = ("see the log", "", f"figures not read: {exc!r}", "", "—")
        lines.append(f"| `{entry['name']}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a few minutes")
    parser.add_argument("--only", help="comma-separated benchmark names (default: all)")
    parser.add_argument("--logs", type=Path, help="directory for logs and results.json")
    parser.add_argument("--database-url", default="",
                        help="PostgreSQL server for the pg_* benchmarks (a superuser's URL); "
                             "default: one private cluster for all of them")
    args = parser.parse_args(argv)
    names = args.only.split(",") if args.only else list(RUNS)
    unknown = [n for n in names if n not in RUNS]
    if unknown:
        parser.error(f"unknown benchmark {unknown}; choose from {', '.join(RUNS)}")
    logs = args.logs or Path(tempfile.mkdtemp(prefix="qrq-bench-summary-"))
    logs.mkdir(parents=True, exist_ok=True)
    print(f"machine: {os.cpu_count()} CPUs, load average "
          + "/".join(f"{x:.1f}" for x in os.getloadavg())
          + f"; {'quick' if args.quick else 'full'} run; logs in {logs}", flush=True)
    began = time.perf_counter()
    with postgres(args.database_url, any(n.startswith("pg_") for n in names), logs) as url:
        results = [run(name, args.quick, logs, url) for name in names]
    wall = time.perf_counter() - began
    (logs / "results.json").write_text(json.dumps(results, indent=1))
    print("\n" + table(results))
    print("\nload average at the end: " + "/".join(f"{x:.1f}" for x in os.getloadavg())
          + f"; {sum(r['seconds'] for r in results):.0f} s in the scripts, {wall:.0f} s "
          f"wall (waits for the benchmark lock included); every script's JSON in "
          f"{logs / 'results.json'}")
    return 0 if all(r["result"] and r["exit"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
