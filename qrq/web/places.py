"""The connections each client address may hold on qrq's web server
(:mod:`qrq.web.server`). (The places where waiting requests park are counted by
:class:`qrq.web.waiting.WaiterSlots`.)"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time

logger = logging.getLogger("qrq.web")


class Clients:
    """Open connections per client address, at most *limit* each (None: no limit)."""

    def __init__(self, limit: int | None):
        self.limit = limit
        self.open: dict[str, int] = {}
        self._lock = threading.Lock()
        self._warned = 0.0

    def take(self, client: str) -> bool:
        with self._lock:
            if self.limit is not None and self.open.get(client, 0) >= self.limit:
                refused = time.monotonic() - self._warned > 60
                self._warned = time.monotonic() if refused else self._warned
            else:
                self.open[client] = self.open.get(client, 0) + 1
                return True
        if refused:  # (at most once a minute)
            logger.warning("client %s holds %s connections: closing its new ones (clients "
                           "behind a proxy: set QRQ_TRUSTED_PROXIES)", client, self.limit)
        return False

    def give_back(self, client: str) -> None:
        with self._lock:
            left = self.open.get(client, 0) - 1
            if left > 0:
                self.open[client] = left
            else:
                self.open.pop(client, None)


def client_of(addr) -> str:
    """The client a connection comes from: its IPv4 address, its IPv6 address's /64 (one
    host has a whole /64 to pick from), or ``local`` (a Unix socket)."""
    host = addr[0] if isinstance(addr, tuple) and addr else ""
    try:
        address = ipaddress.ip_address(str(host).split("%")[0])
    except ValueError:
        return "local"
    if address.version == 4:
        return str(address)
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(ipaddress.ip_network(f"{address}/64", strict=False))
