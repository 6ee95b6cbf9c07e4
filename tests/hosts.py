"""Separate hosts on this machine: each a network namespace joined to this one by a
veth pair, so a process in it reaches the servers of this (the "database") host only
over that link, at :attr:`Host.gateway`, and sees none of the paths it is told to hide.

Needs root (``ip netns``); :func:`network` says when that is missing, and the tests
then run their "hosts" as plain processes with separate data directories (outside CI).
"""

from __future__ import annotations

import itertools
import os
import shlex
import subprocess
from pathlib import Path

# 10.213.<n>.0/30 per host: .1 on this side, .2 inside the namespace.
SUBNET = "10.213"


def _host_numbers():
    """Numbers 1-250 for this process's hosts: with pytest-xdist, a block of its own per
    worker; within it, starting where the pid says (away from a killed run's leftovers)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:])
    block = 250 // workers
    start = os.getpid() % block
    return (worker * block + (start + k) % block + 1 for k in itertools.count())


_numbers = _host_numbers()


def _ip(*args: str, netns: str | None = None) -> None:
    cmd = ["ip", *(["netns", "exec", netns, "ip"] if netns else []), *args]
    subprocess.run(cmd, check=True, capture_output=True)


def can_make_hosts() -> bool:
    """Whether this process may create network namespaces (root with ``ip``)."""
    return os.geteuid() == 0 and subprocess.run(
        ["ip", "netns", "list"], capture_output=True).returncode == 0


class Host:
    """One namespace: ``popen`` runs a command there, with *hidden* paths replaced by
    empty directories (a mount namespace of its own), as on a machine without them."""

    def __init__(self, name: str, number: int, hidden: tuple[Path, ...] = ()):
        self.name = name
        self.netns = f"qrq{number}"
        self.link = f"qrqv{number}"
        self.gateway = f"{SUBNET}.{number}.1"
        self.address = f"{SUBNET}.{number}.2"
        self.hidden = tuple(hidden)
        _ip("netns", "add", self.netns)
        _ip("link", "add", self.link, "type", "veth", "peer", "name", "eth0", "netns",
            self.netns)
        _ip("addr", "add", f"{self.gateway}/30", "dev", self.link)
        _ip("link", "set", self.link, "up")
        _ip("addr", "add", f"{self.address}/30", "dev", "eth0", netns=self.netns)
        _ip("link", "set", "eth0", "up", netns=self.netns)
        _ip("link", "set", "lo", "up", netns=self.netns)
        # Through this host: the other hosts' links (servers listen on those addresses).
        _ip("route", "add", "default", "via", self.gateway, netns=self.netns)

    def command(self, argv: list[str]) -> list[str]:
        mounts = " && ".join(f"mount -t tmpfs -o size=1m,mode=0700 qrq-hidden "
                             f"{shlex.quote(str(path))}" for path in self.hidden)
        script = f"{mounts + ' && ' if mounts else ''}exec \"$@\""
        return ["ip", "netns", "exec", self.netns, "unshare", "--mount",
                "--propagation", "private", "sh", "-c", script, "sh", *argv]

    def popen(self, argv: list[str], **kwargs) -> subprocess.Popen:
        return subprocess.Popen(self.command(argv), **kwargs)

    def run(self, argv: list[str], **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(argv), **kwargs)

    def disconnect(self) -> None:
        """Pull the host's network cable: its packets stop, its processes go on."""
        _ip("link", "set", self.link, "down")

    def reconnect(self) -> None:
        _ip("link", "set", self.link, "up")

    def remove(self) -> None:
        subprocess.run(["ip", "netns", "pids", self.netns], capture_output=True)
        subprocess.run(["ip", "link", "del", self.link], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True)


class Network:
    """The hosts of one test; :meth:`close` removes them all."""

    def __init__(self):
        self.hosts: list[Host] = []

    def host(self, name: str, hidden: tuple[Path, ...] = ()) -> Host:
        host = Host(name, next(_numbers), hidden)
        self.hosts.append(host)
        return host

    @property
    def gateways(self) -> list[str]:
        return [host.gateway for host in self.hosts]

    def close(self) -> None:
        for host in self.hosts:
            host.remove()
