"""The shipped web server (``qrq serve``: waitress with parked waiters) on 127.0.0.1
serving the test's app, in a thread.

Test modules import the ``live`` fixture from here (pytest finds fixtures in a
module's namespace)."""

import contextlib
import threading

import pytest

from qrq.web.server import create_server


@contextlib.contextmanager
def serving(app, threads=8, create=create_server, **options):
    """*app* under qrq's server (8 threads, as shipped; or the server *create* makes,
    such as plain waitress) on a free port; its base URL."""
    server = create(app, host="127.0.0.1", port=0, threads=threads, **options)
    closing = threading.Event()

    def run():
        try:
            server.run()
        except OSError:  # its loop's select() on the socket closed under it
            if not closing.is_set():
                raise

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.effective_port}"
    finally:
        closing.set()
        server.task_dispatcher.shutdown()
        server.close()
        thread.join(timeout=10)
        for channel in list(server._map.values()):  # connections still open, once stopped
            channel.close()


@pytest.fixture
def live(app):
    with serving(app) as base:
        yield base
