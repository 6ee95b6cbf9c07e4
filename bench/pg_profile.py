"""Where qrq's time goes on PostgreSQL: py-spy profiles of a drain and of POSTs.

* ``drain``: N no-op jobs enqueued on qrq-pg (bench/_pg_support.py; ``--system
  qrq-sqlite``: on the SQLite default, for comparison), then the consumer
  (``huey_consumer huey_app.huey -w 4 -k process``) drains them under ``py-spy record
  --subprocesses`` (CPU samples only, 100 Hz).
* ``post``: qrq-pg's web server (bench/pg_api_latency.py's waitress) under ``py-spy
  record --idle`` (every thread's stack, waiting included) while 8 clients send N
  ``POST /api/generate-qr-pdf`` each.

Prints, of the samples in a worker's loop (drain) or in a request's view (post), the
share of each path of the four frames below it (each line of qrq that runs a statement
shows as its own path), and the share of all samples waiting on PostgreSQL. The raw
stacks stay with ``--keep``. Needs py-spy (``.venv/bin/pip install py-spy``)
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
TOP = 20
# Where a run's own work starts: a worker's loop; a request's view dispatch.
ANCHORS = {"drain": "Worker.loop", "post": "Flask.dispatch_request"}


def record(pid: int, out: Path, *flags: str) -> subprocess.Popen:
    return subprocess.Popen([PY_SPY, "record", "--pid", str(pid), "--format", "raw",
                             "--rate", "100", "--output", str(out), "--nonblocking", *flags],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _frame(text: str) -> str:
    """py-spy's raw frame "function (path:line)" as "function file:line"."""
    name, _, where = text.partition(" (")
    return f"{name} {where.rstrip(')').rsplit('/', 1)[-1]}" if where else name


def breakdown(stacks: Path, anchor: str, depth: int = 4) -> dict:
    """Samples under *anchor* (a function name) grouped by the *depth* frames below it;
    the share of samples waiting on PostgreSQL (in psycopg's ``Connection.wait``)."""
    groups: collections.Counter = collections.Counter()
    total = under = waiting = 0
    for line in stacks.read_text().splitlines():
        frames, _, count = line.rpartition(" ")
        if not frames:
            continue
        names = [_frame(f) for f in frames.split(";")]
        total += int(count)
        if any(n.startswith("Connection.wait ") for n in names):
            waiting += int(count)
        at = next((i for i, n in enumerate(names) if n.split(" ")[0] == anchor), None)
        if at is not None:
            under += int(count)
            groups[" > ".join(names[at + 1:at + 1 + depth]) or "(itself)"] += int(count)
    return {"samples": total, "under_anchor_percent": round(100 * under / max(total, 1), 1),
            "waiting_on_postgresql_percent": round(100 * waiting / max(total, 1), 1),
            "top": [(k, round(100 * v / max(under, 1), 1))
                    for k, v in groups.most_common(TOP)]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("drain", "post"))
    parser.add_argument("--jobs", type=int, default=2000, help="drain: jobs; post: per client")
    parser.add_argument("--keep", action="store_true", help="keep the stacks file")
    parser.add_argument("--system", choices=("qrq-pg", "qrq-sqlite"), default="qrq-pg")
    add_server_argument(parser)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="qrq-pg-profile-"))
    work.chmod(0o755)
    stacks = work / "stacks.txt"
    load_start = load_average()
    try:
        with server(args.database_url, work) as (url, _):
            system = System(args.system, work, url)
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
        found = breakdown(stacks, ANCHORS[args.what])
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"{args.what}: {found['samples']} samples, {found['under_anchor_percent']}% under "
          f"{ANCHORS[args.what]}, {found['waiting_on_postgresql_percent']}% waiting on "
          f"PostgreSQL (psycopg Connection.wait); load average {load_start} -> "
          f"{load_average()}\nshare of the samples under {ANCHORS[args.what]}, by the "
          "frames below it:")
    for name, share in found["top"]:
        print(f"{share:6.1f}%  {name}")
    print(json.dumps({"bench": "pg_profile", "what": args.what, "system": args.system, **found,
                      "load_average": [load_start, load_average()]}))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
