"""Memory of the default consumer at rest: ``qrq worker`` next to stock huey's default.

Each side starts on a fresh data directory (``qrq init`` for qrq; a ``SqliteHuey`` file
for stock, ``huey_consumer stock_huey_app.huey`` with huey's defaults: one thread
worker), idles for ``--settle`` seconds, then the proportional set size (PSS: each
shared page split among the processes sharing it) and the resident size (RSS) of every
process of its group are read from ``/proc/PID/smaps_rollup`` and summed. qrq is
measured again at rest after its consumer has run ``--reports`` analytics reports
(over 4 demo scan databases of 20,000 scans; each report a job, ``qrq analytics run
--refresh --wait``): what a server holds once the day's reports have run. Sides
alternate over ``--repeats``; medians. The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _proc import exit_on_sigterm, group_pids
from _support import REPO, env_for, load_average, median, qrq_cli, start, stop

BENCH = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
TARGET_PSS_MB = 100


def rollup(pid: int) -> dict[str, int]:
    """``{"Pss": kB, "Rss": kB}`` of *pid* from /proc/PID/smaps_rollup (0 if it is gone)."""
    found = {"Pss": 0, "Rss": 0}
    try:
        lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
    except (FileNotFoundError, ProcessLookupError):
        return found
    for line in lines:
        key, _, rest = line.partition(":")
        if key in found:
            found[key] = int(rest.split()[0])
    return found


def measure(side: str, root: Path, settle: float, reports: int) -> dict:
    data = root / side
    data.mkdir(parents=True)
    if side == "qrq":
        qrq_cli(data, "init")
        qrq_cli(data, "demo", "analytics", "--dbs", "4", "--scans", "20000")
        cmd, env = [str(BIN / "qrq"), "worker"], env_for(data)
    else:
        cmd = [str(BIN / "huey_consumer"), "stock_huey_app.huey"]
        env = env_for(data, PYTHONPATH=str(BENCH), BENCH_STOCK_DB=str(data / "queue.db"))
    proc = start(cmd, data / "consumer.log", cwd=REPO, env=env)
    try:
        time.sleep(settle)
        if proc.poll() is not None:
            raise RuntimeError(f"{side} exited; see {data / 'consumer.log'}")
        found = sizes(proc.pid)
        if side == "qrq" and reports:
            for _ in range(reports):
                qrq_cli(data, "analytics", "run", "--refresh", "--wait")
            time.sleep(settle)
            after = sizes(proc.pid)
            found.update(pss_after_reports_mb=after["pss_mb"],
                         rss_after_reports_mb=after["rss_mb"])
        return found
    finally:
        stop(proc)
        shutil.rmtree(data, ignore_errors=True)


def sizes(pid: int) -> dict:
    """The summed PSS and RSS of *pid*'s process group, and its number of processes."""
    pids = group_pids(pid)
    totals = [rollup(p) for p in pids]
    return {"processes": len(pids),
            "pss_mb": round(sum(t["Pss"] for t in totals) / 1024, 1),
            "rss_mb": round(sum(t["Rss"] for t in totals) / 1024, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--settle", type=float, default=5.0, help="seconds idle first")
    parser.add_argument("--reports", type=int, default=4,
                        help="analytics reports qrq's consumer runs before its second "
                             "measure (0: none)")
    args = parser.parse_args(argv)
    exit_on_sigterm()
    root = Path(tempfile.mkdtemp(prefix="qrq-bench-footprint-"))
    report: dict = {"bench": "footprint", "load_avg_at_start": os.getloadavg()}
    print(f"load average {load_average()}; {args.repeats} repeats, {args.settle:g} s idle")
    runs: dict = {"qrq": [], "stock": []}
    try:
        for repeat in range(args.repeats):
            for side in ("qrq", "stock") if repeat % 2 == 0 else ("stock", "qrq"):
                run = measure(side, root / str(repeat), args.settle, args.reports)
                runs[side].append(run)
                after = (f"; after {args.reports} reports PSS {run['pss_after_reports_mb']:.1f}"
                         f" MB, RSS {run['rss_after_reports_mb']:.1f} MB"
                         if "pss_after_reports_mb" in run else "")
                print(f"  repeat {repeat + 1} {side:<5} {run['processes']} processes, "
                      f"PSS {run['pss_mb']:.1f} MB, RSS {run['rss_mb']:.1f} MB{after}",
                      flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    results = {side: {"processes": samples[0]["processes"],
                      "pss_mb": median([r["pss_mb"] for r in samples]),
                      "rss_mb": median([r["rss_mb"] for r in samples]), "runs": samples}
               for side, samples in runs.items()}
    for side, r in results.items():
        after = [s["pss_after_reports_mb"] for s in r["runs"] if "pss_after_reports_mb" in s]
        if after:
            r["pss_after_reports_mb"] = median(after)
        print(f"{side:<5} median PSS {r['pss_mb']:.1f} MB, RSS {r['rss_mb']:.1f} MB "
              f"({r['processes']} processes)"
              + (f"; after {args.reports} reports PSS {median(after):.1f} MB" if after else ""))
    qrq = results["qrq"]
    met = max(qrq["pss_mb"], qrq.get("pss_after_reports_mb", 0)) < TARGET_PSS_MB
    print(f"target: qrq's PSS < {TARGET_PSS_MB} MB, at rest and after the reports: "
          f"{'met' if met else 'NOT met'}")
    report.update(results=results, target_met=met, load_avg_at_end=os.getloadavg())
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
