"""qrq's web server (``qrq serve``): waitress, with waiting requests parked off its threads.

waitress reads and writes every connection in one I/O loop and runs each request
on one of a few threads from its start to its end, so a request that waits for a
job (``?wait=``, the events stream) would hold a thread for up to a minute: eight
such clients would stall the whole API. Here such a request *parks* (the protocol
is in :mod:`qrq.web.waiting`): its thread goes back to the pool, its connection
stays in the I/O loop, and when the job watcher wakes it the request is queued for
a thread again, to be answered (a long-poll is run again, as new) or to go on (a
stream writes its next events). Everything else is waitress as ``waitress-serve``
runs it, so concurrent waiters are bounded by connections, not threads.

waitress's private parts, used here only (checked with waitress 3.0.0 to 3.0.2):
``HTTPChannel.service`` (copied below with a parking branch) with the channel's
``requests``, ``connected`` and ``server.add_task``; ``ErrorTask`` (its request's
``error``: ``code``, ``reason``, ``body``); ``WSGITask.execute``,
``get_environment``, ``write`` and ``finish`` and the response state ``Task``
keeps in instance attributes; the server's ``channel_class`` attribute.
"""

from __future__ import annotations

import json
import logging
import resource
import time
import traceback
from collections.abc import Callable, Iterator

from waitress import create_server as waitress_server
from waitress.buffers import ReadOnlyFileBasedBuffer
from waitress.channel import ClientDisconnected, HTTPChannel
from waitress.task import ErrorTask, Task, WSGITask
from waitress.utilities import InternalServerError

from qrq.web.errors import error_body
from qrq.web.places import Clients, client_of
from qrq.web.waiting import PARK_KEY, WOKEN_KEY, Park, WaiterSlots, Wake

logger = logging.getLogger("qrq.web")

THREADS = 8
CONNECTION_LIMIT = 1000
# Waiters park on at most this share of the connections, so other clients always get in;
# beyond it they wait as under any server (a thread each, within QRQ_MAX_WAITERS).
PARKING_SHARE = 0.9
# Connections one client address holds at most by default (an IPv6 client's /64): one
# client that opens connections and sends nothing must not take every place.
CLIENT_SHARE = 0.1
MIN_PER_CLIENT = 64
# A connection with no request in progress (idle, or a request still being sent) closes
# after this many seconds (waitress: 120); a request waiting for a job is in progress.
IDLE_SECONDS = 30
_TASK_KEY = "qrq.server.task"  # the task of a request, for the app wrapper only


class ParkingTask(WSGITask):
    """A request's task that can park: before it answers (it is then run again, as
    new, when woken) or between two chunks of its body (it then goes on)."""

    subscribe: Callable[[Wake], None] | None = None  # set while parked
    woken = False
    _app_iter = None  # what the app returned, closed when the body ends
    _iterator: Iterator | None = None  # the body, parked between two chunks

    reserved = False  # holds one of the server's parking places
    # waitress's WSGITask.execute: call the app and write its answer (named apart, for
    # the override below).
    _run_app = WSGITask.execute

    def get_environment(self):
        if self.environ is None:
            environ = super().get_environment()
            if self.channel.server.parked.take():
                self.reserved = True
                environ[PARK_KEY] = self._park
            environ[WOKEN_KEY] = self.woken
            environ[_TASK_KEY] = self
        return self.environ

    def release(self) -> None:
        """Give the parking place back: the answer is complete (or abandoned)."""
        if self.reserved:
            self.reserved = False
            self.channel.server.parked.give_back()

    def _park(self, subscribe: Callable[[Wake], None]) -> None:
        if self.wrote_header:
            raise RuntimeError("a request parks before it answers, or its body yields Park")
        self.subscribe = subscribe

    def service(self):
        if self.subscribe is not None:  # woken
            self.subscribe = None
            if self._iterator is None:  # a parked request: run again, as new
                self.release()
                channel, request = self.channel, self.request
                self.__dict__.clear()  # the response state back to Task's defaults
                Task.__init__(self, channel, request)
                self.woken = True
        super().service()  # start, execute, finish

    def execute(self):
        if self._iterator is not None:
            self._go_on()
        else:
            self._run_app()

    def finish(self):
        if self.subscribe is None:  # not parked: the answer is complete
            super().finish()

    def body(self, app_iter) -> Iterator[bytes]:
        """*app_iter*'s chunks as waitress writes them, up to its end or a Park."""
        self._app_iter, self._iterator = app_iter, iter(app_iter)
        return self._chunks()

    def _chunks(self) -> Iterator[bytes]:
        try:
            for chunk in self._iterator:
                if isinstance(chunk, Park):
                    self.subscribe = chunk.subscribe
                    return  # the body stays open, parked
                yield chunk
        except BaseException:
            self.abandon()
            raise
        self.abandon()

    def _go_on(self) -> None:
        """Write the parked body's next chunks (its headers went out before it parked)."""
        chunks = self._chunks()
        try:
            for chunk in chunks:
                if chunk:
                    self.write(chunk)
        finally:
            chunks.close()

    def abandon(self) -> None:
        """Close the body (its end, or its client gone while it was parked)."""
        self.subscribe = None
        app_iter, self._app_iter, self._iterator = self._app_iter, None, None
        if hasattr(app_iter, "close"):
            app_iter.close()


def _parking_app(app):
    """*app*, with the bodies it answers followed for Park, and the answer of a request
    that parked dropped (it is run again when woken)."""
    def application(environ, start_response):
        task = environ.pop(_TASK_KEY)
        app_iter = app(environ, start_response)
        if task.subscribe is not None:
            if hasattr(app_iter, "close"):
                app_iter.close()
            return []  # writes nothing: the headers are not sent either
        if isinstance(app_iter, ReadOnlyFileBasedBuffer):
            return app_iter  # a file: waitress sends it from its I/O loop
        return task.body(app_iter)
    return application


def _open_channel(server, sock, addr, adj, map=None):
    """waitress's ``channel_class`` call for an accepted connection: a channel, or none
    (the connection closed at once) when its client holds its share of places already."""
    client = client_of(addr)
    if not server.clients.take(client):
        sock.close()
        return None
    try:
        channel = ParkingChannel(server, sock, addr, adj, map=map)
    except BaseException:
        server.clients.give_back(client)
        raise
    channel.client = client
    return channel


# waitress's own errors (a request it cannot read) as the codes of qrq's error shape.
_WAITRESS_CODES = {400: "bad_request", 413: "payload_too_large", 431: "headers_too_large",
                   500: "internal_error", 501: "not_implemented"}


class JsonErrorTask(ErrorTask):
    """waitress's answer to a request it cannot read (bad framing, headers or a body
    over its limits) or to an app that failed mid-answer, in qrq's one error shape
    instead of plain text; never with a traceback."""

    def execute(self):
        error = self.request.error
        message = ("internal server error" if error.code >= 500 and error.code != 501
                   else f"{error.reason}: {error.body}")
        body = json.dumps(error_body(error.code, _WAITRESS_CODES.get(error.code, "bad_request"),
                                     message)).encode()
        self.status = f"{error.code} {error.reason}"
        self.response_headers.append(("Content-Type", "application/json"))
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class ParkingChannel(HTTPChannel):
    """A connection whose request may park: it then keeps its place (later requests
    on the connection wait behind it) and is queued for a thread when woken."""

    task_class = ParkingTask
    error_task_class = JsonErrorTask
    parked: ParkingTask | None = None
    client: str | None = None  # counted in the server's ``clients`` until closed

    def writable(self):
        """waitress's, except while a task thread is writing to this connection: it holds
        the buffer's lock and sends as it writes, and the I/O loop could not take the
        buffer from it. Asking for POLLOUT then made the loop spin, rebuilding its poll
        set from every connection on each pass and holding the GIL the task needed: with
        900 long-polls woken at once the last answer came 20-200 s later. What a task
        could not send (a client reading slowly) it leaves with the lock free and the
        trigger pulled, and the loop sends it as the client makes room."""
        writing = (self.requests and self.parked is None and not self.will_close
                   and not self.close_when_flushed and self.total_outbufs_len
                   and self.total_outbufs_len < self.adj.outbuf_high_watermark)
        if writing:
            if not self.outbuf_lock.acquire(False):
                return False
            self.outbuf_lock.release()
        return super().writable()

    def del_channel(self, map=None):
        super().del_channel(map)
        client, self.client = self.client, None
        if client is not None:
            self.server.clients.give_back(client)

    def _wake(self) -> None:
        self.server.add_task(self)

    def service(self):
        """waitress's ``HTTPChannel.service``, with a parked task kept and subscribed."""
        request = self.requests[0]
        task, self.parked = self.parked, None
        if task is None:
            task = (self.error_task_class if request.error else self.task_class)(self, request)
        try:
            if self.connected:
                task.service()
            else:
                task.close_on_finish = True
        except ClientDisconnected:
            self.logger.info("Client disconnected while serving %s", task.request.path)
            task.close_on_finish = True
        except Exception:
            self.logger.exception("Exception while serving %s", task.request.path)
            if not task.wrote_header:
                if self.adj.expose_tracebacks:
                    body = traceback.format_exc()
                else:
                    body = "The server encountered an unexpected internal server error"
                err_request = self.parser_class(self.adj)
                err_request.error = InternalServerError(body)
                err_request.version = request.version
                try:
                    err_request.headers["CONNECTION"] = request.headers["CONNECTION"]
                except KeyError:
                    pass
                if isinstance(task, ParkingTask):
                    task.abandon()
                    task.release()
                task = self.error_task_class(self, err_request)
                try:
                    task.service()  # must not fail
                except ClientDisconnected:
                    task.close_on_finish = True
            else:
                task.close_on_finish = True

        subscribe = getattr(task, "subscribe", None)
        if subscribe is not None:
            if self.connected:  # (close_on_finish: close once the answer is complete)
                self.parked = task
                self.last_activity = time.time()
                if self.total_outbufs_len:  # what the stream wrote last, not yet sent
                    self.server.pull_trigger()
                subscribe(self._wake)  # last: the wake may run service() at once
                return
            task.abandon()
        if isinstance(task, ParkingTask):
            task.release()

        if task.close_on_finish:
            with self.requests_lock:
                self.close_when_flushed = True
                for request in self.requests:
                    request.close()
                self.requests = []
        else:
            if len(self.requests) > 1:
                self._flush_outbufs_below_high_watermark()
            if self.current_outbuf_count > 0:
                self.current_outbuf_count = self.adj.outbuf_high_watermark
            request.close()
            with self.requests_lock:
                self.requests.pop(0)
                if self.connected and self.requests:
                    self.server.add_task(self)
                elif (self.connected and self.request is not None
                      and self.request.expect_continue and self.request.headers_finished
                      and not self.sent_continue):
                    self.send_continue()
        if self.connected:
            self.server.pull_trigger()
        self.last_activity = time.time()


def per_client_default(connection_limit: int) -> int:
    return max(MIN_PER_CLIENT, int(connection_limit * CLIENT_SHARE))


def create_server(app, *, host: str, port: int, threads: int = THREADS,
                  connection_limit: int = CONNECTION_LIMIT, per_client: int | None = None,
                  **options):
    """A waitress server of *app* whose waiting requests park (not yet running).

    *per_client*: connections one client address may hold (default: a tenth of
    *connection_limit*, at least 64; 0: no limit). Behind trusted proxies
    (``QRQ_TRUSTED_PROXIES``) every connection comes from a proxy: no limit.
    """
    settings = app.config["QRQ"]
    # A body no route accepts is refused from its Content-Length, before waitress
    # spools it to a temporary file (its own limit is 1 GiB), even without a token.
    options.setdefault("max_request_body_size",  # waitress refuses from this size on
                       max(settings.max_request_bytes, settings.max_batch_bytes) + 1)
    options.setdefault("channel_timeout", IDLE_SECONDS)
    options.setdefault("cleanup_interval", 5)  # how often idle connections are looked for
    # waitress's own "listen" (several addresses) in place of host and port, if given.
    where = {"listen": options.pop("listen")} if "listen" in options else \
        {"host": host, "port": port}
    server = waitress_server(_parking_app(app), threads=threads,
                             connection_limit=connection_limit,
                             asyncore_use_poll=True,  # select() stops at 1024 descriptors
                             **where, **options)
    if per_client is None:
        per_client = per_client_default(connection_limit)
    parked = WaiterSlots(int(connection_limit * PARKING_SHARE))
    clients = Clients(None if settings.trusted_proxies else per_client or None)
    for one in {server, *listeners(server)}:  # the limits are the process's: shared
        one.channel_class, one.parked, one.clients = _open_channel, parked, clients
    return server


def listeners(server) -> list:
    """The servers that accept *server*'s connections: itself, or each of waitress's
    ``MultiSocketServer`` (a host name with several addresses, such as ``localhost``
    with 127.0.0.1 and ::1), whose connections never see the wrapper's attributes."""
    if hasattr(server, "effective_host"):
        return [server]
    return [one for one in server.map.values() if hasattr(one, "effective_host")]


def raise_file_limit(wanted: int) -> int:
    """Raise this process's open-file limit towards *wanted* (each connection holds a
    descriptor); return the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return wanted
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def serve(app, *, host: str, port: int, threads: int = THREADS,
          connection_limit: int = CONNECTION_LIMIT, per_client: int | None = None) -> None:
    """Serve *app* until interrupted."""
    files = raise_file_limit(connection_limit + 100)  # and the databases, logs, artifacts
    if files < connection_limit + 100:
        connection_limit = max(16, files - 100)
        logger.warning("open-file limit %s: serving at most %s connections", files,
                       connection_limit)
    try:
        server = create_server(app, host=host, port=port, threads=threads,
                               connection_limit=connection_limit, per_client=per_client)
    except (OSError, ValueError) as exc:  # a port in use, an address not this host's
        reason = getattr(exc, "strerror", None) or str(exc)
        raise SystemExit(f"Error: cannot listen on {host}:{port}: {reason}") from None
    for one in listeners(server):  # an IPv6 address in brackets (waitress: with several)
        host = one.effective_host
        logger.info("Serving on http://%s:%s", f"[{host}]" if ":" in str(host) else host,
                    one.effective_port)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
