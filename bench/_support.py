"""Helpers shared by the benchmarks: subprocesses, the qrq CLI, percentiles.

Every process a benchmark starts runs in its own session (process group), so
:func:`stop` can end it together with any children (huey's worker processes).
"""

from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def qrq_cli(data_dir: Path, *args: str) -> str:
    """Run ``qrq --data-dir DATA_DIR ARGS`` and return its stdout."""
    done = subprocess.run([PYTHON, "-m", "qrq", "--data-dir", str(data_dir), *args],
                          cwd=REPO, env=env_for(data_dir), capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"qrq {' '.join(args)} failed ({done.returncode}):\n"
                           f"{done.stdout}{done.stderr}")
    return done.stdout


def env_for(data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a process a benchmark starts on *data_dir*: no QRQ_ setting of
    the caller's, and Python's bytecode cache on, as an installed package has it (a shell
    with PYTHONDONTWRITEBYTECODE=1, as on the machines here, would make each start compile
    qrq's modules from source: 0.44-0.50 s to import huey_app, 0.33 s from the cache)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("QRQ_") and k != "PYTHONDONTWRITEBYTECODE"}
    return {**env, "QRQ_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1", **extra}


def start(cmd: list[str], log: Path, **kwargs) -> subprocess.Popen:
    """Start *cmd* in a new session, stdout and stderr into *log*."""
    with open(log, "ab") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, **kwargs)


def stop(proc: subprocess.Popen | None, grace: float = 15.0) -> None:
    """SIGTERM *proc*'s process group, then SIGKILL it if it outlives *grace* seconds."""
    if proc is None:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(wait)
            # The leader is gone; make sure no child of its group lingers.
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            break
        except subprocess.TimeoutExpired:
            continue
        break
    if proc.poll() is None:
        proc.wait(5)


def wait_for_text(path: Path, text: str, proc: subprocess.Popen, timeout: float) -> None:
    """Wait until *text* appears in the file at *path* (a log); fail if *proc* exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}; see {path}")
        time.sleep(0.05)
    raise RuntimeError(f"{text!r} not in {path} after {timeout:g}s")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def load_average() -> str:
    """The 1/5/15-minute load averages, to judge how noisy the machine was."""
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def percentile(values: list[float], q: float) -> float:
    """The *q*-th percentile (0-100) by the nearest-rank method."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
