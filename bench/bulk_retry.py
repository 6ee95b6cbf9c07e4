"""Bulk retry of failed jobs: what ``POST /api/admin/jobs/retry-failed`` and the
dashboard's "retry all" run (``dead_letters.retry_jobs``: a chunk of jobs per
transaction), against its baseline in the same run, the single-job retry looped
(``huey.retry`` per job: a transaction, and on SQLite a commit, each; bulk retry ran so
until 2026-12-06).

N mail jobs are queued once in a fresh data directory (``QRQ_DATA_DIR``, or
``QRQ_DATABASE_URL`` if set); each repeat marks them all failed with SQL, then retries
them one way, then the other (the order alternates), and checks that every job was
queued again exactly once. Wall and CPU seconds of this process; paired ratio per repeat.

Run: ``.venv/bin/python bench/bulk_retry.py`` (5,000 jobs, 5 repeats), or quickly
``.venv/bin/python bench/bulk_retry.py --jobs 1000 --repeats 3``. The last line of output
is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    os.environ.setdefault("QRQ_DATA_DIR", tempfile.mkdtemp(prefix="qrq-bench-retry-"))
    sys.path.insert(0, str(REPO))
    import huey_app  # noqa: F401  (registers the tasks)
    from qrq.config import load_settings
    from qrq.queue import dead_letters, huey, submit
    from tasks.mail import send_mail_task

    settings = load_settings()
    huey.init(settings)
    ids = [submit(send_mail_task, ["ops@example.com"], "subject", f"body {i}", owner_id=None)
           for i in range(args.jobs)]

    def fail_all() -> None:
        huey.storage.sql("delete from task", commit=True)
        huey.storage.sql("update job set status = 'failed', error = 'bench', "
                         "finished_at = 1", commit=True)

    def one_by_one() -> None:
        for job_id in ids:
            huey.retry(job_id)

    def chunked() -> None:
        report = dead_letters.retry_jobs(huey, ids)
        assert not report["skipped"], report["skipped"][:3]

    ways = {"one_by_one": one_by_one, "chunked": chunked}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in ways}
    for repeat in range(args.repeats):
        order = list(ways) if repeat % 2 == 0 else list(reversed(ways))
        for name in order:
            fail_all()
            cpu, began = time.process_time(), time.perf_counter()
            ways[name]()
            runs[name].append({"seconds": time.perf_counter() - began,
                               "cpu_s": time.process_time() - cpu})
            queued = huey.storage.sql("select count(*), count(distinct job_id) from task",
                                      results=True)[0]
            assert tuple(queued) == (args.jobs, args.jobs), queued
            print(f"repeat {repeat + 1} {name:>10}: {runs[name][-1]['seconds']:.2f} s, "
                  f"CPU {runs[name][-1]['cpu_s']:.2f} s", flush=True)

    def median(name: str, key: str) -> float:
        return round(statistics.median(run[key] for run in runs[name]), 3)

    paired = [a["seconds"] / b["seconds"]
              for a, b in zip(runs["one_by_one"], runs["chunked"], strict=True)]
    result = {
        "backend": "postgresql" if settings.database_url else "sqlite",
        "jobs": args.jobs, "repeats": args.repeats,
        **{f"{name}_s": median(name, "seconds") for name in ways},
        **{f"{name}_cpu_s": median(name, "cpu_s") for name in ways},
        "paired_speedup": round(statistics.median(paired), 2),
        "load_avg": os.getloadavg(),
    }
    print(f"median over {args.repeats}: one by one {result['one_by_one_s']} s "
          f"(CPU {result['one_by_one_cpu_s']}), chunked {result['chunked_s']} s "
          f"(CPU {result['chunked_cpu_s']}); chunked {result['paired_speedup']}x faster "
          "(paired)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
