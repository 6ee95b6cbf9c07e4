"""Private PostgreSQL clusters for the tests (``.ci/postgres``): the session's server when
CI gives none, and clusters a test may stop, restart or open to its hosts' links."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / ".ci" / "postgres"


class Cluster:
    """A cluster started in a directory of its own (not under pytest's tmp_path: the
    server runs as the postgres user, who cannot enter it); :meth:`close` removes it."""

    def __init__(self, listen: str = "127.0.0.1"):
        self.where = Path(tempfile.mkdtemp(prefix="qrq-pg-"))
        self.where.chmod(0o755)
        self.dir = self.where / "cluster"
        started = subprocess.run([str(SCRIPT), "start", str(self.dir)], capture_output=True,
                                 text=True, env={**os.environ, "PG_LISTEN": listen})
        if started.returncode != 0:
            shutil.rmtree(self.where, ignore_errors=True)
            required(f"PostgreSQL did not start: {started.stderr.strip()}")
        self.url = started.stdout.strip()

    def pg_ctl(self, *args: str) -> None:
        """Run pg_ctl on this cluster (``"restart"``, ``"stop"``, ``"start"``)."""
        bindir = sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1]
        command = [str(bindir / "pg_ctl"), "-D", str(self.dir / "data"), "-l",
                   str(self.dir / "server.log"), "-m", "fast", "-w", *args]
        if os.getuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        # No pipes: a server it starts would hold them open and run() would wait for it.
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=120)

    @contextlib.contextmanager
    def stopped(self):
        """The server stopped for the ``with`` block, started again after it."""
        self.pg_ctl("stop")
        try:
            yield
        finally:
            self.pg_ctl("start")

    def close(self) -> None:
        subprocess.run([str(SCRIPT), "stop", str(self.dir)], check=False)
        shutil.rmtree(self.where, ignore_errors=True)


def required(message: str) -> None:
    """PostgreSQL is missing: that fails the run under CI, and skips the test elsewhere."""
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)
