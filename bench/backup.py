"""Back up 101 SQLite databases (>= 1 GiB) and compare with a raw ``cp`` of the same files.

Builds a data directory in a temporary dir: app.db and queue.db (``qrq init --demo``)
and 99 analytics databases of realistic scan rows (timestamps, user agents, IPs,
countries, a random blob; one index), heavy-tailed in size. Then, in the same run:

- ``cp`` of the 101 files into a fresh directory, and ``cp`` + ``sync`` (the page
  cache and the disk's limit);
- ``run_backup`` (online backup API, zstd, sha256, verification by restore +
  integrity_check + row counts), with 2 and 1 threads, and with gzip;
- the verification alone (``verify_set``) and ``PRAGMA integrity_check`` of the
  sources alone, to show where the time goes.

Prints a table and, on its last line, a JSON object. Everything is deleted at the end.

Usage: python bench/backup.py [--repeats 3] [--gib 1.0] [--quick]
"""

from __future__ import annotations

import argparse
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


def build(data: Path, gib: float) -> list[Path]:
    env = {**os.environ, "QRQ_DATA_DIR": str(data)}
    subprocess.run([sys.executable, "-m", "qrq", "init", "--demo"], cwd=REPO, env=env,
                   check=True, capture_output=True)
    folder = data / "analytics"
    folder.mkdir()
    target_mb = gib * 1024 * 1.03  # a little over, so the total is >= the target
    jobs = [(str(folder / f"shop{i:03d}.db"), int(mb * 1e6 / ROW_BYTES))
            for i, mb in enumerate(sizes_mb(target_mb))]
    with multiprocessing.Pool(os.cpu_count() or 2) as pool:
        pool.map(make_analytics, sorted(jobs, key=lambda j: -j[1]))
    files = [data / "app.db", data / "queue.db", *sorted(folder.glob("*.db"))]
    short = gib * 2**30 - sum(f.stat().st_size for f in files)
    if short > 0:  # top the largest one up until the total is at least the target
        conn = sqlite3.connect(folder / "shop000.db")
        conn.execute(FILL, (int(short / ROW_BYTES * 1.1) + 1000,))
        conn.commit()
        conn.close()
    return files


def drop(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def time_cp(files: list[Path], dest: Path, sync: bool) -> float:
    dest.mkdir()
    subprocess.run(["sync"], check=True)  # start with no dirty pages, like the backup
    started = time.perf_counter()
    subprocess.run(["cp", *map(str, files), str(dest)], check=True)
    if sync:
        subprocess.run(["sync"], check=True)
    elapsed = time.perf_counter() - started
    drop(dest)
    subprocess.run(["sync"], check=True)  # do not bill the next run for this one's writes
    return elapsed


def time_backup(settings) -> tuple[float, dict]:
    from qrq.backup import run_backup

    subprocess.run(["sync"], check=True)
    started = time.perf_counter()
    manifest = run_backup(settings)
    elapsed = time.perf_counter() - started
    if manifest["status"] != "ok":
        raise SystemExit(f"backup not ok: {manifest['status']}")
    return elapsed, manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--quick", action="store_true", help="skip the 1-thread and gzip runs")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # still delete the temp dir

    root = Path(tempfile.mkdtemp(prefix="qrq-bench-backup-"))
    try:
        data = root / "data"
        os.environ["QRQ_DATA_DIR"] = str(data)
        load_start = os.getloadavg()[0]  # the machine may be shared: say how busy it was
        t0 = time.perf_counter()
        files = build(data, args.gib)
        built = time.perf_counter() - t0
        total = sum(f.stat().st_size for f in files)
        mb = total / 1e6
        print(f"{len(files)} databases, {total / 2**30:.2f} GiB, built in {built:.0f}s "
              f"(free: {shutil.disk_usage(root).free / 2**30:.0f} GiB)", flush=True)

        from qrq.backup import list_sets, verify_set
        from qrq.config import load_settings

        base = load_settings()
        figures: dict[str, list[float]] = {"cp": [], "cp_sync": [], "backup": []}
        manifest = None
        for i in range(args.repeats):
            # Alternate the order: whichever copy runs first pays for a colder cache.
            for sync in ((False, True) if i % 2 == 0 else (True, False)):
                figures["cp_sync" if sync else "cp"].append(
                    time_cp(files, root / "copy", sync=sync))
            seconds, manifest = time_backup(dataclasses.replace(
                base, backup_dir=str(root / f"backups-{i}")))
            figures["backup"].append(seconds)
            print(f"repeat {i + 1}: cp {figures['cp'][-1]:.2f}s, cp+sync "
                  f"{figures['cp_sync'][-1]:.2f}s, backup {seconds:.2f}s", flush=True)
            if i:
                drop(root / f"backups-{i}")

        backups0 = root / "backups-0"
        [kept] = list_sets(backups0)
        started = time.perf_counter()
        problems = verify_set(backups0, kept)
        verify_s = time.perf_counter() - started
        assert not any(problems.values()), problems
        started = time.perf_counter()
        for f in files:
            conn = sqlite3.connect(f"file:{f}?mode=ro", uri=True)
            conn.execute("pragma cache_size=-262144")
            conn.execute("pragma mmap_size=1073741824")
            assert conn.execute("pragma integrity_check").fetchone() == ("ok",)
            conn.close()
        integrity_s = time.perf_counter() - started

        extra = {}
        if not args.quick:
            for label, change in (("backup_1_thread", {"backup_threads": 1}),
                                  ("backup_gzip", {"backup_codec": "gzip"})):
                seconds, m = time_backup(dataclasses.replace(
                    base, backup_dir=str(root / label), **change))
                extra[label] = {"seconds": round(seconds, 2), "mb_s": round(mb / seconds, 1),
                                "ratio": round(m["size"] / m["compressed_size"], 2)}
                drop(root / label)
                print(f"{label}: {seconds:.2f}s", flush=True)

        med = {k: statistics.median(v) for k, v in figures.items()}
        ratio = manifest["size"] / manifest["compressed_size"]
        result = {
            "databases": len(files), "bytes": total, "repeats": args.repeats,
            "cp_s": round(med["cp"], 2), "cp_mb_s": round(mb / med["cp"], 1),
            "cp_sync_s": round(med["cp_sync"], 2),
            "cp_sync_mb_s": round(mb / med["cp_sync"], 1),
            "backup_s": round(med["backup"], 2), "backup_mb_s": round(mb / med["backup"], 1),
            "compression_ratio": round(ratio, 2), "codec": manifest["codec"],
            "threads": base.backup_threads,
            "backup_vs_cp": round(med["cp"] / med["backup"], 3),
            "backup_vs_cp_sync": round(med["cp_sync"] / med["backup"], 3),
            "verify_only_s": round(verify_s, 2),
            "integrity_check_sources_s": round(integrity_s, 2),
            "runs": {k: [round(x, 2) for x in v] for k, v in figures.items()},
            "load_average_1m": {"start": round(load_start, 2),
                                "end": round(os.getloadavg()[0], 2)},
            "cpus": os.cpu_count(),
            **extra,
        }
        print(f"\n{'':28}{'seconds':>9}{'MB/s':>9}")
        for label, key in (("cp", "cp"), ("cp + sync", "cp_sync"), ("backup (all in)", "backup")):
            print(f"{label:28}{med[key]:9.2f}{mb / med[key]:9.1f}")
        print(f"{'verify only (restore+check)':28}{verify_s:9.2f}{mb / verify_s:9.1f}")
        print(f"{'integrity_check of sources':28}{integrity_s:9.2f}{mb / integrity_s:9.1f}")
        print(f"compression ratio {ratio:.2f} ({manifest['codec']}); backup is "
              f"{result['backup_vs_cp']:.0%} of cp, {result['backup_vs_cp_sync']:.0%} of "
              "cp + sync throughput")
        print(json.dumps(result))
    finally:
        drop(root)


if __name__ == "__main__":
    main()
