"""Back up 101 SQLite databases (>= 1 GiB) and compare with a raw ``cp`` of the same files.

Builds a data directory in a temporary dir: app.db and queue.db (``qrq init --demo``)
and 99 analytics databases of realistic scan rows (timestamps, user agents, IPs,
countries, a random blob; one index), heavy-tailed in size; with ``--schema product``,
databases in qrq's own scan schema instead (``qrq.analytics.scans``: four indexes on small rows,
about twice the ``integrity_check`` work per byte). Then, in the same run,
every repeat measures, side by side:

- warm (the files already in the page cache): ``cp`` of the 101 files, ``cp`` +
  ``sync``, and a first full ``run_backup`` (online backup API, zstd, sha256,
  verification by restore + integrity_check + row counts; it fsyncs its files);
- cold (``sync; echo 3 > /proc/sys/vm/drop_caches`` before each; needs root):
  ``cp`` + ``sync`` (the disk's limit: read from disk, written to disk) and the
  same full backup;
- the second night: a backup next to the full set when nothing changed (every
  file reused) and when 10% of the databases changed (10 analytics databases get
  1,000 new rows each), warm and cold;

- with ``--read-mbps N`` (needs root and a cgroup blkio or io controller): the
  cold ``cp`` + ``sync`` and the cold full backup again, each with its reads from
  the disk capped at N MB/s: a disk that is the limit, as a cloud volume is
  (this machine's virtual disk reads at ~1 GB/s; the cap is a simulation, said so
  in the output);

then, once, the verification alone and ``PRAGMA integrity_check`` of the sources
alone, on one thread and on the backup's threads (the floor: no backup that checks
every database can take less), and unless ``--quick`` a 1-thread and a gzip backup.

Prints the runs and a table and, on its last line, a JSON object. Everything is
deleted at the end.

Usage: python bench/backup.py [--repeats 3] [--gib 1.0] [--quick] [--no-cold]
                              [--read-mbps 200] [--schema bench|product]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import json
import multiprocessing
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ROW_BYTES = 180  # measured: bytes per scan row, index included
PRODUCT_ROW_BYTES = 191  # measured: qrq's own scan schema, four indexes included

SCHEMA = """
create table scan (id integer primary key, card_id integer, scanned_at text,
                   user_agent text, ip text, country text, payload blob);
create index scan_card on scan (card_id, scanned_at);
"""
FILL = """
with recursive n(i) as (select 1 union all select i + 1 from n where i < ?)
insert into scan (card_id, scanned_at, user_agent, ip, country, payload)
select abs(random()) % 5000,
  strftime('%Y-%m-%dT%H:%M:%S', 1700000000 + i * 37, 'unixepoch'),
  case abs(random()) % 4
    when 0 then 'Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15'
    when 1 then 'Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 Chrome/124.0'
    when 2 then 'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/124.0'
    else 'QRScanner/3.2 (Android 13)' end,
  (abs(random()) % 223 + 1) || '.' || (abs(random()) % 256) || '.' ||
    (abs(random()) % 256) || '.' || (abs(random()) % 256),
  substr('DEFRUSGBNLITESPLSECHATBEDKNOFI', (abs(random()) % 15) * 2 + 1, 2),
  randomblob(abs(random()) % 64)
from n
"""


def make_analytics(args: tuple[str, int]) -> int:
    path, rows = args
    conn = sqlite3.connect(path)
    conn.execute("pragma journal_mode=wal")
    conn.executescript(SCHEMA)
    conn.execute(FILL, (rows,))
    conn.commit()
    conn.close()
    return os.path.getsize(path)


def sizes_mb(total_mb: float, count: int = 99) -> list[float]:
    """Heavy-tailed: 4 large, 20 medium, the rest small, summing to *total_mb*."""
    weights = [20.0] * 4 + [3.0] * 20 + [1.0] * (count - 24)
    scale = total_mb / sum(weights)
    return [w * scale for w in weights]


def make_product(args: tuple[str, int, int]) -> int:
    """A database in qrq's own scan schema (``qrq.analytics.scans``: a year of demo traffic)."""
    from qrq.analytics.scans import write_demo_database

    path, index, rows = args
    write_demo_database(Path(path), index, rows)
    return os.path.getsize(path)


def build(data: Path, gib: float, schema: str = "bench") -> list[Path]:
    env = {**os.environ, "QRQ_DATA_DIR": str(data)}
    subprocess.run([sys.executable, "-m", "qrq", "init", "--demo"], cwd=REPO, env=env,
                   check=True, capture_output=True)
    folder = data / "analytics"
    folder.mkdir()
    target_mb = gib * 1024 * 1.03  # a little over, so the total is >= the target
    if schema == "product":
        target_mb *= 1.06  # no top-up below: aim a little higher
        jobs = [(str(folder / f"shop{i:03d}.db"), i, int(mb * 1e6 / PRODUCT_ROW_BYTES))
                for i, mb in enumerate(sizes_mb(target_mb))]
        make = make_product
    else:
        jobs = [(str(folder / f"shop{i:03d}.db"), int(mb * 1e6 / ROW_BYTES))
                for i, mb in enumerate(sizes_mb(target_mb))]
        make = make_analytics
    # close() + join(), not the context manager: its terminate() SIGTERMs the workers,
    # which inherit this script's SIGTERM handler; one exiting while it held the task
    # queue's lock left the other waiting for it forever (seen once).
    pool = multiprocessing.Pool(os.cpu_count() or 2)
    try:
        pool.map(make, sorted(jobs, key=lambda j: -j[-1]))
    finally:
        pool.close()
        pool.join()
    files = [data / "app.db", data / "queue.db", *sorted(folder.glob("*.db"))]
    short = gib * 2**30 - sum(f.stat().st_size for f in files)
    if short > 0 and schema == "bench":  # top the largest one up to the target
        conn = sqlite3.connect(folder / "shop000.db")
        conn.execute(FILL, (int(short / ROW_BYTES * 1.1) + 1000,))
        conn.commit()
        conn.close()
    return files


def drop(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def drop_caches() -> None:
    """Write back dirty pages, then empty the page cache: the next reads come from disk."""
    subprocess.run(["sync"], check=True)
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def can_drop_caches() -> bool:
    return os.access("/proc/sys/vm/drop_caches", os.W_OK)


@contextlib.contextmanager
def read_limit(path: Path, mbps: float | None):
    """Cap this process's (and its children's) reads from *path*'s disk at *mbps* MB/s,
    with a blkio (cgroup v1) or io (v2) cgroup; no cap when *mbps* is None."""
    if mbps is None:
        yield
        return
    dev = os.stat(path).st_dev
    device, limit = f"{os.major(dev)}:{os.minor(dev)}", int(mbps * 1e6)
    v1, controllers = Path("/sys/fs/cgroup/blkio"), Path("/sys/fs/cgroup/cgroup.controllers")
    if (v1 / "blkio.throttle.read_bps_device").exists():
        home, knob, rule = v1, "blkio.throttle.read_bps_device", f"{device} {limit}"
    elif controllers.exists() and "io" in controllers.read_text().split():
        home, knob, rule = controllers.parent, "io.max", f"{device} rbps={limit}"
    else:
        raise SystemExit("--read-mbps needs a cgroup blkio (v1) or io (v2) controller")
    group = home / f"qrq-bench-{os.getpid()}"
    group.mkdir()
    (group / knob).write_text(f"{rule}\n")
    (group / "cgroup.procs").write_text(f"{os.getpid()}\n")
    try:
        yield
    finally:
        (home / "cgroup.procs").write_text(f"{os.getpid()}\n")
        group.rmdir()


def check_sources(files: list[Path], threads: int) -> float:
    """Seconds for ``PRAGMA integrity_check`` of every file on *threads* threads."""
    def check(path: Path) -> None:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        conn.execute("pragma cache_size=-262144")
        conn.execute("pragma mmap_size=1073741824")
        assert conn.execute("pragma integrity_check").fetchone() == ("ok",)
        conn.close()

    subprocess.run(["sync"], check=True)
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        list(pool.map(check, sorted(files, key=lambda f: -f.stat().st_size)))
    return time.perf_counter() - started


def settle(cold: bool) -> None:
    """Start each timed step with no dirty pages (and, cold, with no cached pages)."""
    drop_caches() if cold else subprocess.run(["sync"], check=True)


def time_cp(files: list[Path], dest: Path, sync: bool, cold: bool = False) -> float:
    dest.mkdir()
    settle(cold)
    started = time.perf_counter()
    subprocess.run(["cp", *map(str, files), str(dest)], check=True)
    if sync:
        subprocess.run(["sync"], check=True)
    elapsed = time.perf_counter() - started
    drop(dest)
    subprocess.run(["sync"], check=True)  # do not bill the next step for this one's writes
    return elapsed


def time_backup(settings, cold: bool = False) -> tuple[float, dict]:
    from qrq.backup import run_backup

    settle(cold)
    started = time.perf_counter()
    manifest = run_backup(settings)
    elapsed = time.perf_counter() - started
    if manifest["status"] != "ok":
        raise SystemExit(f"backup not ok: {manifest['status']}")
    return elapsed, manifest


def change_some(files: list[Path], repeat: int, share: float = 0.1,
                schema: str = "bench") -> list[str]:
    """Append a day's scans (1,000 rows) to *share* of the analytics databases, a
    different group each repeat."""
    from qrq.analytics.scans import demo_rows

    analytics = [f for f in files if f.parent.name == "analytics"]
    count = max(1, round(len(files) * share))
    chosen = [analytics[(repeat * count + k) % len(analytics)] for k in range(count)]
    for path in chosen:
        conn = sqlite3.connect(path)
        if schema == "product":
            conn.executemany("insert into scans (scanned_at, template_id, domain, country, "
                             "device, visitor_hash) values (?, ?, ?, ?, ?, ?)",
                             demo_rows(0, 1000, days=1, seed=repeat + 1))
        else:
            conn.execute(FILL, (1000,))
        conn.commit()
        conn.close()
    return [p.name for p in chosen]


def median_ratio(num: list[float], den: list[float]) -> float:
    """Median over repeats of num[i] / den[i] (paired: same repeat, same moment)."""
    return statistics.median(n / d for n, d in zip(num, den, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--quick", action="store_true", help="skip the 1-thread and gzip runs")
    parser.add_argument("--no-cold", action="store_true",
                        help="skip the cold-cache runs (they need root)")
    parser.add_argument("--schema", choices=("bench", "product"), default="bench",
                        help="bench: one scan table with one index; product: qrq's own "
                             "scan schema (qrq.analytics.scans, four indexes), slower to check")
    parser.add_argument("--read-mbps", type=float, default=None,
                        help="also run cold cp and backup with disk reads capped at this "
                             "many MB/s (root, cgroup blkio/io)")
    args = parser.parse_args()
    cold = not args.no_cold
    if args.read_mbps and args.no_cold:
        raise SystemExit("--read-mbps runs cold: drop --no-cold")
    if cold and not can_drop_caches():
        raise SystemExit("cold runs need root (/proc/sys/vm/drop_caches); use --no-cold")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # still delete the temp dir

    root = Path(tempfile.mkdtemp(prefix="qrq-bench-backup-"))
    try:
        data = root / "data"
        os.environ["QRQ_DATA_DIR"] = str(data)
        load_start = os.getloadavg()  # the machine may be shared: say how busy it was
        t0 = time.perf_counter()
        files = build(data, args.gib, args.schema)
        built = time.perf_counter() - t0
        total = sum(f.stat().st_size for f in files)
        mb = total / 1e6
        print(f"{len(files)} databases, {total / 2**30:.2f} GiB, built in {built:.0f}s "
              f"(free: {shutil.disk_usage(root).free / 2**30:.0f} GiB); load average "
              f"{load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}", flush=True)

        from qrq.backup import list_sets, verify_set
        from qrq.config import load_settings

        base = load_settings()

        def at(folder: str, **change):
            return dataclasses.replace(base, backup_dir=str(root / folder), **change)

        runs: dict[str, list[float]] = {}
        nights = ("warm", "cold") if cold else ("warm",)
        modes = nights + (("limited",) if args.read_mbps else ())

        def record(key: str, seconds: float) -> None:
            runs.setdefault(key, []).append(seconds)

        manifest = None
        for i in range(args.repeats):
            # Alternate the order: whichever copy runs first pays for a colder cache.
            for sync in ((False, True) if i % 2 == 0 else (True, False)):
                record("cp_warm" if not sync else "cp_sync_warm",
                       time_cp(files, root / "copy", sync=sync))
            for mode in modes:
                limit = args.read_mbps if mode == "limited" else None
                with read_limit(root, limit):
                    if mode != "warm":
                        record(f"cp_sync_{mode}",
                               time_cp(files, root / "copy", True, cold=True))
                    seconds, manifest = time_backup(at(f"full-{mode}"), cold=mode != "warm")
                record(f"backup_{mode}", seconds)
                if mode != "warm":
                    drop(root / f"full-{mode}")
            # The second night, next to the full set just made (each extra set is
            # deleted again, so every run compares with the same full set).
            backups = root / "full-warm"
            for label, changed in (("unchanged", []), ("changed10", None)):
                if changed is None:
                    changed = change_some(files, i, schema=args.schema)
                for mode in nights:
                    seconds, night = time_backup(at("full-warm"), cold=mode == "cold")
                    fresh = sorted(e["name"] for e in night["databases"]
                                   if not e.get("reused_from"))
                    want = sorted(f"analytics/{n}" for n in changed)
                    if fresh != want:
                        raise SystemExit(f"{label}: backed up afresh {fresh}, expected {want}")
                    record(f"night_{label}_{mode}", seconds)
                    drop(backups / night["id"])
            line = ", ".join(f"{k} {v[-1]:.2f}s" for k, v in runs.items())
            print(f"repeat {i + 1}: {line}", flush=True)
            if i < args.repeats - 1:
                drop(backups)

        backups0 = root / "full-warm"
        [kept] = list_sets(backups0)
        subprocess.run(["sync"], check=True)
        started = time.perf_counter()
        problems = verify_set(backups0, kept)
        verify_s = time.perf_counter() - started
        assert not any(problems.values()), problems
        integrity_s = check_sources(files, 1)
        # The floor: integrity_check of every database on the backup's threads, with
        # nothing else (no snapshot, compression or restore). No backup that checks
        # each database the way the issue asks can take less time than this.
        floor_s = check_sources(files, base.backup_threads)

        extra = {}
        if not args.quick:
            for label, change in (("backup_1_thread", {"backup_threads": 1}),
                                  ("backup_gzip", {"backup_codec": "gzip"})):
                seconds, m = time_backup(at(label, **change))
                extra[label] = {"seconds": round(seconds, 2), "mb_s": round(mb / seconds, 1),
                                "ratio": round(m["size"] / m["compressed_size"], 2)}
                drop(root / label)
                print(f"{label} (warm): {seconds:.2f}s", flush=True)

        med = {k: statistics.median(v) for k, v in runs.items()}
        ratio = kept["size"] / kept["compressed_size"]
        versus = {}  # paired: throughput of the backup / throughput of cp in the same repeat
        for mode in modes:
            base_key = f"cp_sync_{mode}"
            for key in (f"backup_{mode}", f"night_unchanged_{mode}", f"night_changed10_{mode}"):
                if key in runs:
                    versus[f"{key}_vs_{base_key}"] = round(
                        median_ratio(runs[base_key], runs[key]), 3)
            # The best any verified backup could reach next to this cp.
            versus[f"floor_vs_{base_key}"] = round(med[base_key] / floor_s, 3)
        versus["backup_warm_vs_cp_warm"] = round(median_ratio(runs["cp_warm"],
                                                              runs["backup_warm"]), 3)
        load_end = os.getloadavg()
        result = {
            "databases": len(files), "bytes": total, "repeats": args.repeats,
            "schema": args.schema,
            "seconds": {k: round(v, 2) for k, v in med.items()},
            "mb_s": {k: round(mb / v, 1) for k, v in med.items()},
            "versus_cp": versus,
            "compression_ratio": round(ratio, 2), "codec": kept["codec"],
            "threads": base.backup_threads,
            "verify_only_s": round(verify_s, 2),
            "integrity_check_sources_s": round(integrity_s, 2),
            "integrity_check_sources_parallel_s": round(floor_s, 2),
            "read_limit_mb_s": args.read_mbps,
            "runs": {k: [round(x, 2) for x in v] for k, v in runs.items()},
            "load_average": {"start": [round(x, 2) for x in load_start],
                             "end": [round(x, 2) for x in load_end]},
            "cpus": os.cpu_count(),
            **extra,
        }
        print(f"\n{'median of ' + str(args.repeats) + ' repeats':34}{'seconds':>9}{'MB/s':>9}")
        for key in runs:
            print(f"{key:34}{med[key]:9.2f}{mb / med[key]:9.1f}")
        print(f"{'verify only (restore+check), warm':34}{verify_s:9.2f}{mb / verify_s:9.1f}")
        print(f"{'integrity_check of sources, warm':34}{integrity_s:9.2f}{mb / integrity_s:9.1f}")
        print(f"{f'  the same on {base.backup_threads} threads (floor)':34}"
              f"{floor_s:9.2f}{mb / floor_s:9.1f}")
        if args.read_mbps:
            print(f"'limited': cold, reads from the disk capped at {args.read_mbps:g} MB/s "
                  "(a cgroup; a simulated slower disk, not this machine's)")
        print(f"compression ratio {ratio:.2f} ({kept['codec']})")
        for key, value in versus.items():
            print(f"{key:50} {value:6.1%} (median of paired ratios)")
        print(f"load average at the start {load_start[0]:.2f}, at the end {load_end[0]:.2f}")
        print(json.dumps(result))
    finally:
        drop(root)


if __name__ == "__main__":
    main()
