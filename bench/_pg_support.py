"""What the PostgreSQL benchmarks share: the server, the four systems, their drivers.

The systems, each with a *driver* (a subprocess that enqueues, counts jobs not done and
times pickups, answering one JSON line per command on stdin: bench/pg_driver.py for
qrq, bench/peers/peer.py for the peers) and a *consumer* command:

* ``qrq-pg``: qrq with ``QRQ_DATABASE_URL`` on the benchmark's server;
  ``huey_consumer huey_app.huey -w 4 -k process`` (qrq's settings otherwise).
* ``qrq-sqlite``: the same on SQLite files in a temporary data directory.
* ``procrastinate``, ``pgqueuer``: bench/peers/peer.py in the peers' own venv
  (``bench/peers/.venv``, made from bench/peers/requirements.txt; neither is a qrq
  dependency), each in its own database on the same server as ``qrq-pg``.

The server is a private cluster (``.ci/postgres start``, on 127.0.0.1) unless
``--database-url`` names one; each system gets its own fresh database on it,
``qrq_bench_<system>`` (dropped first if it exists: point ``--database-url`` at a server
where those names are free). Durability
is the same for every PostgreSQL system, the server's, and each benchmark prints it: the
private cluster runs as ``.ci/postgres`` starts it, ``fsync=off`` and
``full_page_writes=off`` with ``synchronous_commit=on`` (commits wait for the WAL write,
not for the disk). qrq-sqlite keeps qrq's shipped settings (enqueues commit with
``synchronous=FULL``, the consumer with ``NORMAL``), so it pays syncs PostgreSQL skips.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
from _proc import TICKS, _stat_fields
from _support import PYTHON, REPO, env_for, start, stop

BENCH = REPO / "bench"
PEERS_PYTHON = BENCH / "peers" / ".venv" / "bin" / "python"
HUEY_CONSUMER = str(Path(sys.executable).parent / "huey_consumer")
SYSTEMS = ("qrq-pg", "qrq-sqlite", "procrastinate", "pgqueuer")
PG_SYSTEMS = ("qrq-pg", "procrastinate", "pgqueuer")
SETTINGS_SHOWN = ("fsync", "synchronous_commit", "full_page_writes", "wal_level",
                  "shared_buffers", "server_version")


def add_server_argument(parser) -> None:
    parser.add_argument("--database-url", default="",
                        help="a PostgreSQL server to use (a superuser's URL: the benchmark "
                             "creates databases on it); default: a private cluster")


def check_peers() -> None:
    """Make the peers' venv (bench/peers/.venv) if it is missing: a one-time install."""
    if PEERS_PYTHON.exists():
        return
    venv = PEERS_PYTHON.parent.parent
    print(f"making {venv} (procrastinate, PgQueuer; bench/peers/requirements.txt)", flush=True)
    subprocess.run(["python3", "-m", "venv", str(venv)], check=True)
    subprocess.run([str(PEERS_PYTHON), "-m", "pip", "install", "-q", "-r",
                    str(BENCH / "peers" / "requirements.txt")], check=True)


@contextlib.contextmanager
def server(database_url: str, work: Path):
    """The server's URL and, for a private cluster, its postmaster's pid (else None)."""
    if database_url:
        yield database_url, None
        return
    cluster = work / "cluster"
    url = subprocess.run([str(REPO / ".ci" / "postgres"), "start", str(cluster)],
                         check=True, capture_output=True, text=True).stdout.strip()
    try:
        postmaster = int((cluster / "data" / "postmaster.pid").read_text().split()[0])
        yield url, postmaster
    finally:
        subprocess.run([str(REPO / ".ci" / "postgres"), "stop", str(cluster)], check=False)


def server_settings(url: str) -> dict:
    with psycopg.connect(url, autocommit=True) as conn:
        return {name: conn.execute(f"show {name}").fetchone()[0] for name in SETTINGS_SHOWN}


def fresh_database(url: str, name: str) -> str:
    """Create database *name* (dropped first if it exists) on the server; its URL."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')
        conn.execute(f'create database "{name}"')
    return urlsplit(url)._replace(path=f"/{name}").geturl()


def server_cpu_seconds(postmaster: int | None) -> float | None:
    """CPU seconds of the postmaster and its children (backends), or None if unknown."""
    if postmaster is None:
        return None
    total = 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields and (int(entry.name) == postmaster or int(fields[1]) == postmaster):
                total += sum(int(f) for f in fields[11:15])
    return total / TICKS


class Driver:
    """A system's driver subprocess: one command line in, one JSON line out."""

    def __init__(self, cmd: list[str], env: dict, log: Path):
        self.log = open(log, "ab")
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, text=True, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.log,
                                     start_new_session=True)

    def ask(self, *command) -> dict:
        self.proc.stdin.write(" ".join(str(c) for c in command) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"driver {self.proc.args} exited ({self.proc.wait()}); "
                               f"see {self.log.name}")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"driver {self.proc.args[1:]}: {answer['error']}")
        return answer

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            stop(self.proc)
        self.log.close()


class System:
    """One system under test: how to start its driver and its consumer."""

    def __init__(self, name: str, work: Path, url: str):
        self.name, self.work = name, work / name
        self.work.mkdir(parents=True)
        self.url = (fresh_database(url, "qrq_bench_" + name.replace("-", "_"))
                    if name in PG_SYSTEMS else "")
        self.stamps = self.work / "pickup.stamps"
        if name.startswith("qrq"):
            extra = {"QRQ_DATABASE_URL": self.url} if self.url else {}
            self.env = env_for(self.work / "data", QRQ_TASK_MODULES="_noop_tasks",
                               PYTHONPATH=f"{BENCH}:{REPO}", **extra)
            self.driver_cmd = [PYTHON, str(BENCH / "pg_driver.py")]
            self.consumer_cmd = [HUEY_CONSUMER, "huey_app.huey", "-w", "4", "-k", "process"]
            self.qrq_cli("init", "--demo")  # the schema, and a template for PDF jobs
        else:
            self.env = env_for(self.work, BENCH_PICKUP_FILE=str(self.stamps))
            peer = [str(PEERS_PYTHON), str(BENCH / "peers" / "peer.py"), name]
            self.driver_cmd = [*peer, "driver", self.url]
            self.consumer_cmd = [*peer, "worker", self.url]
        self.driver = Driver(self.driver_cmd, self.env, self.work / "driver.log")
        if not name.startswith("qrq"):
            self.driver.ask("install")
        self.consumer: subprocess.Popen | None = None

    def qrq_cli(self, *args: str) -> str:
        done = subprocess.run([PYTHON, "-m", "qrq", *args], cwd=REPO, env=self.env,
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"qrq {' '.join(args)} ({self.name}) failed:\n"
                               f"{done.stdout}{done.stderr}")
        return done.stdout

    def start_consumer(self) -> subprocess.Popen:
        self.consumer = start(self.consumer_cmd, self.work / "consumer.log", cwd=REPO,
                              env=self.env)
        return self.consumer

    def stop_consumer(self) -> None:
        stop(self.consumer)
        self.consumer = None

    def close(self) -> None:
        self.stop_consumer()
        self.driver.close()


def open_systems(names, work: Path, url: str) -> dict[str, System]:
    systems: dict[str, System] = {}
    try:
        for name in names:
            systems[name] = System(name, work, url)
    except BaseException:
        close_systems(systems)
        raise
    return systems


def close_systems(systems: dict[str, System]) -> None:
    for system in systems.values():
        system.close()
