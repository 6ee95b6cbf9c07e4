"""procrastinate and PgQueuer for the PostgreSQL benchmarks, run in their own venv.

Neither is a qrq dependency: ``python3 -m venv bench/peers/.venv && bench/peers/.venv/bin/pip
install -r bench/peers/requirements.txt``. The benchmarks (bench/pg_queues.py,
bench/pg_pickup.py) run this file with that venv's Python as a subprocess, two ways:

* ``peer.py SYSTEM worker URL``: the system's own worker on a queue of no-op jobs (4
  concurrent jobs for procrastinate, PgQueuer's defaults: batch 10, no limit); both
  wake on LISTEN/NOTIFY. The no-op appends ``<marker> <time.time()>`` to the file
  ``BENCH_PICKUP_FILE`` when its argument asks for it (pickup samples only).
* ``peer.py SYSTEM driver URL``: reads commands on stdin, answers each with one JSON line:
  ``install`` (the system's schema), ``enqueue N`` (N no-op jobs, one call = one
  transaction each; seconds taken), ``left`` (jobs not yet done), ``pickup FILE`` (enqueue
  one job and wait until its body ran: ms from just before the enqueue to the body's
  stamp), ``quit``.

SYSTEM is ``procrastinate`` or ``pgqueuer``. Everything runs on one asyncio loop with one
psycopg 3 async connection, as each project's documentation shows.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from pathlib import Path

import psycopg

QUEUE = "bench"


def stamp(marker: str | None) -> None:
    """The no-op's body: record when it ran, if asked to."""
    if marker:
        with open(os.environ["BENCH_PICKUP_FILE"], "a") as out:
            out.write(f"{marker} {time.time()}\n")


# -- procrastinate ------------------------------------------------------------------------

def procrastinate_app(url: str):
    import procrastinate

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=url))

    @app.task(name="noop", queue=QUEUE)
    def noop(marker: str | None = None) -> None:
        stamp(marker)

    return app, noop


class Procrastinate:
    left_sql = "select count(*) from procrastinate_jobs where status in ('todo', 'doing')"

    def __init__(self, url: str):
        self.app, self.noop = procrastinate_app(url)

    async def open(self) -> None:
        await self.app.open_async()

    async def install(self) -> None:
        await self.app.schema_manager.apply_schema_async()

    async def enqueue(self, marker: str | None = None) -> None:
        await self.noop.defer_async(marker=marker)


def procrastinate_worker(url: str) -> None:
    app, _ = procrastinate_app(url)
    app.run_worker(queues=[QUEUE], concurrency=4, wait=True)


# -- PgQueuer -----------------------------------------------------------------------------

class PgQueuer:
    left_sql = "select count(*) from pgqueuer"  # a finished job's row is deleted

    def __init__(self, url: str):
        self.url = url

    async def open(self) -> None:
        from pgqueuer import PsycopgDriver, Queries

        conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
        self.queries = Queries(PsycopgDriver(conn))

    async def install(self) -> None:
        await self.queries.install()

    async def enqueue(self, marker: str | None = None) -> None:
        await self.queries.enqueue("noop", marker.encode() if marker else None)


def pgqueuer_worker(url: str) -> None:
    from pgqueuer import PgQueuer as App
    from pgqueuer import PsycopgDriver

    async def run() -> None:
        conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
        app = App(PsycopgDriver(conn))

        @app.entrypoint("noop")
        async def noop(job) -> None:
            stamp(job.payload.decode() if job.payload else None)

        await app.run()

    asyncio.run(run())


# -- the driver ---------------------------------------------------------------------------

SYSTEMS = {"procrastinate": (Procrastinate, procrastinate_worker),
           "pgqueuer": (PgQueuer, pgqueuer_worker)}


async def drive(system, url: str) -> None:
    await system.open()
    loop = asyncio.get_running_loop()
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as watch:
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            command, *args = line.split()
            if command == "install":
                await system.install()
                answer: dict = {"ok": True}
            elif command == "enqueue":
                began = time.perf_counter()
                for _ in range(int(args[0])):
                    await system.enqueue()
                answer = {"seconds": time.perf_counter() - began}
            elif command == "left":
                answer = {"left": (await (await watch.execute(system.left_sql)).fetchone())[0]}
            elif command == "pickup":
                answer = {"ms": await pickup(system, Path(args[0]))}
            elif command == "quit":
                break
            else:
                answer = {"error": f"unknown command {command!r}"}
            print(json.dumps(answer), flush=True)


async def pickup(system, stamps: Path, timeout: float = 30.0) -> float:
    marker = uuid.uuid4().hex
    began = time.time()
    await system.enqueue(marker)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stamps.exists():
            for line in stamps.read_text().splitlines():
                if line.startswith(marker):
                    return 1000 * (float(line.split()[1]) - began)
        await asyncio.sleep(0.002)
    raise RuntimeError(f"no pickup of {marker} in {timeout:g}s")


def main() -> None:
    name, role, url = sys.argv[1:4]
    system, worker = SYSTEMS[name]
    if role == "worker":
        worker(url)
    else:
        asyncio.run(drive(system(url), url))


if __name__ == "__main__":
    main()
