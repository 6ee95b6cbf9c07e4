"""A TCP relay in front of a real PostgreSQL server that can lose a commit's answer.

Between the client and the server it passes every byte on, both ways, until
:meth:`Relay.lose_commit_answer` arms it: then the first connection that sends a
statement containing the armed text and then ``COMMIT`` gets its ``COMMIT`` to the
server, which commits, but never gets the answer: the relay reads it and closes both
sides, as a network that fails at that moment would. The client cannot tell whether
its transaction committed. :meth:`Relay.drop_statement` closes the connection instead
when a statement holding the armed text is sent, before the server sees it: nothing
of that transaction commits.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from urllib.parse import urlsplit, urlunsplit


class Relay:
    def __init__(self, url: str):
        parts = urlsplit(url)
        self._target = (parts.hostname, parts.port or 5432)
        self._listener = socket.create_server(("127.0.0.1", 0))
        port = self._listener.getsockname()[1]
        netloc = parts.netloc.rsplit("@", 1)
        host = f"127.0.0.1:{port}"
        self.url = urlunsplit(parts._replace(
            netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host))
        self._armed: bytes | None = None
        self._drop: bytes | None = None
        self._lock = threading.Lock()
        self.lost = threading.Event()  # set once a commit's answer or a statement was dropped
        threading.Thread(target=self._accept, daemon=True).start()

    def lose_commit_answer(self, after: bytes) -> None:
        """Drop the answer to the next ``COMMIT`` sent after a statement holding *after*."""
        with self._lock:
            self._armed = after

    def drop_statement(self, holding: bytes) -> None:
        """Close the connection that next sends a statement holding *holding*, unsent."""
        with self._lock:
            self._drop = holding

    def close(self) -> None:
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self._target)
            state = {"seen": False, "drop": False}
            threading.Thread(target=self._to_server, args=(client, server, state),
                             daemon=True).start()
            threading.Thread(target=self._to_client, args=(server, client, state),
                             daemon=True).start()

    def _to_server(self, client, server, state) -> None:
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                with self._lock:
                    if self._drop is not None and self._drop in data:
                        self._drop = None
                        self.lost.set()
                        break
                    if self._armed is not None and self._armed in data:
                        state["seen"] = True
                    elif state["seen"] and b"COMMIT" in data:
                        self._armed, state["drop"] = None, True
                server.sendall(data)
        _shut(server)

    def _to_client(self, server, client, state) -> None:
        with contextlib.suppress(OSError):
            while data := server.recv(65536):
                if state["drop"]:  # the server's answer to the COMMIT: it committed
                    self.lost.set()
                    break
                client.sendall(data)
        _shut(client)
        _shut(server)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
