"""How many clients can wait for a job at once on one web process, with the API staying fast.

Sets up a fresh data directory with the CLI and serves it with the shipped command,
``qrq serve`` (waitress, 8 threads, waiting requests parked off the threads), or with
``--server waitress`` the command shipped before it, ``waitress-serve --threads=8
web:app`` (a waiting request holds a thread, so at most ``QRQ_MAX_WAITERS`` (4) wait).
No consumer runs, so jobs stay queued. For each N in ``--waiters``:

1. queue a few jobs (``--jobs``), then open N connections at once, each long-polling one
   of them (``GET /api/jobs/<id>?wait=60``, spread evenly);
2. meanwhile, and then for ``--probes`` more requests once all N are in, time
   ``GET /api/me`` on a fresh connection each (the rest of the API);
3. count the waiters answered before any job changed (refused a wait: answered at
   once with the current status) and the server's threads;
4. cancel the jobs and time until every waiter has its answer (``canceled``).

Run: ``flock /tmp/qrq-bench.lock .venv/bin/python bench/waiters.py [--server waitress]``.
The last line of output is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _proc import group_rss
from _support import (
    PYTHON,
    REPO,
    env_for,
    free_port,
    load_average,
    percentile,
    qrq_cli,
    start,
    stop,
    wait_for_text,
)

WAIT_SECONDS = 60
SETTLE_SECONDS = 3.0  # after the last waiter's request is sent, before the steady probes
CLIENT_HOSTS = 50  # waiters come from 127.0.1.1-50, 20 each for 1000


def api(port: int, token: str, method: str, path: str, body: dict | None = None) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    conn.request(method, path, body=json.dumps(body) if body is not None else None,
                 headers=headers)
    response = conn.getresponse()
    data = json.loads(response.read() or b"{}")
    conn.close()
    if response.status >= 300:
        raise RuntimeError(f"{method} {path}: {response.status} {data}")
    return data


async def request(port: int, token: str, path: str, source: str = "127.0.0.1") -> tuple[int, dict]:
    """One GET on a connection of its own from the local address *source*, read to its
    end: (status, JSON body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}"
                 "\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body or b"{}")


async def probe_me(port: int, token: str, into: list[float], stop_at: asyncio.Event | None,
                   count: int = 0) -> None:
    """Time ``GET /api/me`` one after another: *count* times, or until *stop_at* is set."""
    while (stop_at is not None and not stop_at.is_set()) or len(into) < count:
        began = time.perf_counter()
        status, _ = await request(port, token, "/api/me")
        into.append((time.perf_counter() - began) * 1000)
        if status != 200:
            raise RuntimeError(f"GET /api/me answered {status}")
        if stop_at is not None:
            await asyncio.sleep(0.05)


def server_threads(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("Threads:"))


async def one_round(port: int, token: str, pid: int, waiters: int, job_count: int,
                    probes: int) -> dict:
    job_ids = [api(port, token, "POST", "/api/generate-qr-pdf", {"template_id": 2})["job_id"]
               for _ in range(job_count)]
    answered: list[tuple[float, int, str]] = []

    async def waiter(job_id: str, number: int) -> None:
        # Clients on many hosts: qrq serve lets one address hold a tenth of its connections.
        status, body = await request(port, token, f"/api/jobs/{job_id}?wait={WAIT_SECONDS}",
                                     f"127.0.1.{number % CLIENT_HOSTS + 1}")
        answered.append((time.monotonic(), status, body.get("status", "?")))

    arrival: list[float] = []
    arrived = asyncio.Event()
    during = asyncio.create_task(probe_me(port, token, arrival, arrived))
    began = time.monotonic()
    tasks = [asyncio.create_task(waiter(job_ids[i % job_count], i)) for i in range(waiters)]
    await asyncio.sleep(SETTLE_SECONDS)
    arrived.set()
    await during
    steady: list[float] = []
    await probe_me(port, token, steady, None, probes)
    early = len(answered)
    threads = server_threads(pid)
    rss, _ = group_rss(pid)
    canceled_at = time.monotonic()
    for job_id in job_ids:
        # In a thread: a blocking call here would stop this loop from reading the answers
        # (they would all seem to come after the last cancel's own answer).
        await asyncio.to_thread(api, port, token, "DELETE", f"/api/jobs/{job_id}")
    await asyncio.gather(*tasks)
    late = [moment - canceled_at for moment, _, status in answered[early:]]
    return {
        "waiters": waiters, "jobs": job_count,
        "answered_at_once": early,  # refused a wait (over a cap), or failed
        "waited": len(answered) - early,
        "woken_with_final_state": sum(1 for _, code, status in answered[early:]
                                      if code == 200 and status == "canceled"),
        "non_200": sum(1 for _, code, _ in answered if code != 200),
        "me_during_arrival_ms": {"p50": round(percentile(arrival, 50), 1),
                                 "max": round(max(arrival), 1), "n": len(arrival)},
        "me_while_parked_ms": {"p50": round(percentile(steady, 50), 1),
                               "p99": round(percentile(steady, 99), 1),
                               "max": round(max(steady), 1), "n": len(steady)},
        "all_woken_s": round(max(late), 2) if late else None,
        "arrival_s": round(canceled_at - began, 1),
        "server_threads": threads, "server_rss_mb": round(rss / 2**20, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", choices=("qrq", "waitress"), default="qrq",
                        help="qrq: `qrq serve` (shipped); waitress: `waitress-serve "
                             "--threads=8 web:app` (shipped before)")
    parser.add_argument("--waiters", default="100,250,500,900,1000",
                        help="concurrent waiters per round, comma-separated")
    parser.add_argument("--jobs", type=int, default=10, help="jobs the waiters wait for")
    parser.add_argument("--probes", type=int, default=50,
                        help="GET /api/me timed once all waiters are in")
    parser.add_argument("--keep", action="store_true", help="keep the data dir and logs")
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.waiters.split(",")]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # a descriptor per client
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, max(counts) + 200)), hard))

    data_dir = Path(tempfile.mkdtemp(prefix="qrq-bench-waiters-"))
    server = None
    rounds = []
    try:
        qrq_cli(data_dir, "init", "--demo")
        token = qrq_cli(data_dir, "users", "create", "bench").strip().splitlines()[-1]
        port = free_port()
        log = data_dir / "web.out"
        command = ([PYTHON, "-m", "qrq", "serve", "--host=127.0.0.1", f"--port={port}"]
                   if args.server == "qrq" else
                   [PYTHON, "-m", "waitress", f"--listen=127.0.0.1:{port}", "--threads=8",
                    "web:app"])
        server = start(command, log, cwd=REPO,
                       env=env_for(data_dir, QRQ_MAX_ACTIVE_JOBS="1000000"))
        wait_for_text(log, "Serving on", server, timeout=30)
        print(f"machine: {os.cpu_count()} CPUs, load average {load_average()}; "
              f"server: {' '.join(command[1:])}; waiters per round: {counts}; "
              f"{args.jobs} queued jobs each; no consumer")
        for n in counts:
            made = asyncio.run(one_round(port, token, server.pid, n, args.jobs, args.probes))
            rounds.append(made)
            print(f"{n:5d} waiters: {made['waited']} waited, {made['answered_at_once']} "
                  f"answered at once; GET /api/me while parked p50 "
                  f"{made['me_while_parked_ms']['p50']} ms, max "
                  f"{made['me_while_parked_ms']['max']} ms (during arrival max "
                  f"{made['me_during_arrival_ms']['max']} ms); all woken "
                  f"{made['all_woken_s']} s after the cancels; server threads "
                  f"{made['server_threads']}, RSS {made['server_rss_mb']} MB")
    finally:
        stop(server)
        if args.keep or sys.exc_info()[0] is not None:
            print(f"kept {data_dir} (logs inside)")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)
    print(json.dumps({"bench": "waiters", "server": args.server, "cpus": os.cpu_count(),
                      "load_average_end": load_average(), "rounds": rounds}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
