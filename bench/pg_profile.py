"""Where qrq's time goes on PostgreSQL: py-spy profiles of a drain and of POSTs.

* ``drain``: N no-op jobs enqueued on qrq-pg (bench/_pg_support.py), then the consumer
  (``huey_consumer huey_app.huey -w 4 -k process``) drains them under ``py-spy record
  --subprocesses`` (CPU samples only, 100 Hz).
* ``post``: qrq-pg's web server (bench/pg_api_latency.py's waitress) under ``py-spy
  record --idle`` (every thread's stack, waiting included) while 8 clients send N
  ``POST /api/generate-qr-pdf`` each.

Prints the functions with the largest share of samples (inclusive: a function counts
once per sample it is anywhere in the stack), and SQL statements are not separated:
read the stacks (``--keep``) for that. Needs py-spy (``.venv/bin/pip install py-spy``)
and ptrace permission over the processes it starts.

Run: ``flock /tmp/qrq-bench.lock .venv/bin/python bench/pg_profile.py drain`` or ``... post``.
The last line of output is one JSON object with the top shares.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _pg_support import System, add_server_argument, server
from _support import load_average, stop
from api_latency import run_phase
from pg_api_latency import serve

PY_SPY = str(Path(sys.executable).parent / "py-spy")
TOP = 30


def record(pid: int, out: Path, *flags: str) -> subprocess.Popen:
    return subprocess.Popen([PY_SPY, "record", "--pid", str(pid), "--format", "raw",
                             "--rate", "100", "--output", str(out), "--nonblocking", *flags],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def shares(stacks: Path) -> tuple[int, list[tuple[str, float]]]:
    """Samples in all, and the inclusive share of each function (file:name)."""
    counts: collections.Counter = collections.Counter()
    total = 0
    for line in stacks.read_text().splitlines():
        frames, _, count = line.rpartition(" ")
        if not frames:
            continue
        total += int(count)
        seen = set()
        for frame in frames.split(";"):
            # py-spy's raw frames: "function (path:line)"; drop the line number.
            name, _, where = frame.partition(" (")
            key = f"{name} ({where.rsplit(':', 1)[0].split('site-packages/')[-1]})"
            if key not in seen:
                seen.add(key)
                counts[key] += int(count)
    return total, [(k, round(100 * v / total, 1)) for k, v in counts.most_common(TOP)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("drain", "post"))
    parser.add_argument("--jobs", type=int, default=2000, help="drain: jobs; post: per client")
    parser.add_argument("--keep", action="store_true", help="keep the stacks file")
    add_server_argument(parser)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="qrq-pg-profile-"))
    work.chmod(0o755)
    stacks = work / "stacks.txt"
    load_start = load_average()
    try:
        with server(args.database_url, work) as (url, _):
            system = System("qrq-pg", work, url)
            try:
                if args.what == "drain":
                    system.driver.ask("enqueue", args.jobs)
                    consumer = system.start_consumer()
                    spy = record(consumer.pid, stacks, "--subprocesses")
                    while system.driver.ask("left")["left"]:
                        time.sleep(0.05)
                    stop(consumer)
                else:
                    web, port, token = serve(system)
                    spy = record(web.pid, stacks, "--idle")
                    time.sleep(1)  # py-spy attached
                    run_phase(port, token, 8, args.jobs, "generate")
                    stop(web)
                spy.wait(30)
            finally:
                system.close()
        total, top = shares(stacks)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"{args.what}: {total} samples; load average {load_start} -> {load_average()}")
    for name, share in top:
        print(f"{share:6.1f}%  {name}")
    print(json.dumps({"bench": "pg_profile", "what": args.what, "samples": total,
                      "top": top, "load_average": [load_start, load_average()]}))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
