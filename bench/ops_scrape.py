"""Cost of the operations endpoints as the job table grows, against GET /healthz.

Everything these endpoints show is read from queue.db at request time (so every web
process answers alike); this measures what that costs. For each size N (default 10k and
100k retained jobs), a fresh data directory in a temp dir gets N job rows spread over the
last 7 days (90% finished, 5% failed, 2% canceled, 3% queued; run times 0.1-30 s), a few
delayed jobs in the schedule and one registered consumer. Then, in-process through Flask's
test client (no network), each endpoint is called `--repeats` times after two warm-ups:

* baseline: ``GET /healthz`` (two one-row reads);
* ``GET /metrics`` (admin token; the collector runs all its queries);
* ``GET /api/admin/queue-status``;
* ``GET /admin/`` (the dashboard overview, logged in: counts, 24 h charts, consumers).

Figures: median and p90 milliseconds per endpoint and the median's ratio to the baseline.

Run: ``/work/venv/bin/python bench/ops_scrape.py [--sizes 10000,100000] [--repeats 30]``.
The last line of output is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def populate(storage, n: int, now: float) -> None:
    rng = random.Random(7)
    rows = []
    for _ in range(n):
        created = now - rng.random() * 7 * 86400
        roll = rng.random()
        status = ("finished" if roll < 0.90 else "failed" if roll < 0.95
                  else "canceled" if roll < 0.97 else "queued")
        started = created + rng.random() * 5 if status != "queued" else None
        finished = started + 0.1 + rng.random() * 30 if started else None
        job_type = rng.choice(("pdf", "pdf", "pdf", "batch", "analytics", "mail"))
        rows.append((str(uuid.uuid4()), job_type, f"{job_type}.run", rng.randint(1, 50),
                     status, 100 if status == "finished" else 0, created, started, finished,
                     "boom" if status == "failed" else None))
    with storage.db(commit=True) as curs:
        curs.executemany("insert into job (id, type, name, owner_id, status, progress, "
                         "created_at, started_at, finished_at, error) values "
                         "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        curs.execute("insert into consumer (id, host, pid, started_at, heartbeat_at, workers) "
                     "values ('bench:1:abc', 'bench', 1, ?, ?, 4)", (now - 3600, now))


def timed(client, path: str, headers: dict, repeats: int) -> list[float]:
    for _ in range(2):
        client.get(path, headers=headers).close()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        response = client.get(path, headers=headers)
        response.get_data()
        samples.append((time.perf_counter() - start) * 1000)
        assert response.status_code == 200, (path, response.status_code)
        response.close()
    return samples


def p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()

    results = {}
    for n in (int(s) for s in args.sizes.split(",")):
        data = Path(tempfile.mkdtemp(prefix="qrq-bench-ops-"))
        os.environ["QRQ_DATA_DIR"] = str(data)
        try:
            from qrq.appdb.db import app_db
            from qrq.appdb.models import User
            from qrq.config import load_settings
            from qrq.queue import huey
            from qrq.web import create_app

            settings = load_settings()
            app = create_app({"SETTINGS": settings, "TESTING": True})
            with app_db.connection_context():
                _, token = User.create_with_token("bench", admin=True)
            now = time.time()
            populate(huey.storage, n, now)
            from qrq.queue import submit
            from tasks.mail import send_mail_task

            for _ in range(5):
                submit(send_mail_task, ["x@example.com"], "s", "b", owner_id=None, delay=3600)
            client = app.test_client()
            auth = {"Authorization": f"Bearer {token}"}
            page = client.get("/admin/login").get_data(as_text=True)
            csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
            client.post("/admin/login", data={"name": "bench", "token": token,
                                              "csrf_token": csrf}).close()
            figures = {}
            for label, path, headers in (("healthz (baseline)", "/healthz", {}),
                                         ("metrics", "/metrics", auth),
                                         ("queue-status", "/api/admin/queue-status", auth),
                                         ("dashboard overview", "/admin/", {})):
                samples = timed(client, path, headers, args.repeats)
                figures[label] = {"median_ms": round(statistics.median(samples), 2),
                                  "p90_ms": round(p90(samples), 2)}
            base = figures["healthz (baseline)"]["median_ms"]
            for figure in figures.values():
                figure["ratio"] = round(figure["median_ms"] / base, 1)
            results[str(n)] = figures
            print(f"\n{n} jobs ({args.repeats} requests each, median / p90 ms, x baseline):")
            for label, figure in figures.items():
                print(f"  {label:<20} {figure['median_ms']:>8.2f} / {figure['p90_ms']:>8.2f}"
                      f"   {figure['ratio']:>6.1f}x")
            huey.storage.close()
            app_db.close()
        finally:
            shutil.rmtree(data, ignore_errors=True)
    print(json.dumps({"benchmark": "ops_scrape", "repeats": args.repeats,
                      "load_average": os.getloadavg()[0], "results": results}))


if __name__ == "__main__":
    main()
