"""The shipped server (``qrq serve``) parks waiting clients off its threads: many more
clients wait at once than it has threads, and the rest of the API still answers
(issue 17). Through real HTTP on a real server; jobs change through real storage."""

import dataclasses
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

from waitress import create_server as plain_waitress

from qrq.queue import huey, submit
from qrq.web import create_app, server
from qrq.web.api import watcher
from tests.conftest import ROOT, free_port, wait_until
from tests.live import serving
from tests.slow_tasks import steps
from tests.test_waiting import get, read_events

THREADS = 2


def long_poll(base, job_id, headers, answers, wait=60):
    status, _, body = get(f"{base}/api/jobs/{job_id}?wait={wait}", headers)
    answers.append((status, json.loads(body)["status"]))


def in_threads(target, count, *args):
    threads = [threading.Thread(target=target, args=args, daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
    return threads


def test_many_more_clients_wait_than_the_server_has_threads(app, templates, alice):
    user, headers = alice
    job_id = submit(steps, 1, 0, owner_id=user.id)  # no consumer: it stays queued
    answers, streams = [], []
    with serving(app, threads=THREADS) as base:
        polls = in_threads(long_poll, 6 * THREADS, base, job_id, headers, answers)
        readers = in_threads(lambda: streams.append(read_events(
            f"{base}/api/jobs/{job_id}/events", headers)), 2 * THREADS)
        wait_until(lambda: watcher.waiting(job_id) == 8 * THREADS, message="all parked")
        # Every thread is free: the rest of the API answers while they all wait.
        status, _, body = get(f"{base}/api/me", headers, timeout=30)
        assert status == 200 and json.loads(body)["name"] == "alice"
        assert answers == [] and streams == []
        assert huey.cancel(job_id) == "canceled"
        for thread in polls + readers:
            thread.join(timeout=60)
    assert answers == [(200, "canceled")] * 6 * THREADS
    assert len(streams) == 2 * THREADS
    for events in streams:
        assert [name for _, name, _ in events] == ["state", "end"]
        assert events[-1][2]["status"] == "canceled"


def test_waiters_park_on_most_connections_only(settings, templates, alice):
    """Past 90% of the connection limit a waiter is answered as under another server (here
    at once: no thread may wait), so other clients can still connect."""
    app = create_app({"SETTINGS": dataclasses.replace(settings, max_waiters=0)})
    user, headers = alice
    job_id = submit(steps, 1, 0, owner_id=user.id)
    answers = []
    # 27 of 30 (waitress counts its listening socket and its wake-up pipe too, so 28
    # clients connect at most).
    with serving(app, threads=THREADS, connection_limit=30) as base:
        polls = in_threads(long_poll, 27 + 2, base, job_id, headers, answers)
        wait_until(lambda: watcher.waiting(job_id) == 27 and len(answers) == 2,
                   message="27 parked, 2 answered")
        assert answers == [(200, "queued")] * 2
        assert get(f"{base}/api/me", headers, timeout=30)[0] == 200
        huey.cancel(job_id)
        for thread in polls:
            thread.join(timeout=60)
    assert answers[2:] == [(200, "canceled")] * 27


def test_a_keep_alive_connection_goes_on_after_a_parked_answer(app, templates, alice):
    user, headers = alice
    job_id = submit(steps, 1, 0, owner_id=user.id)
    with serving(app, threads=THREADS) as base:
        conn = http.client.HTTPConnection(base.removeprefix("http://"), timeout=60)
        conn.request("GET", f"/api/jobs/{job_id}?wait=60", headers=headers)
        wait_until(lambda: watcher.waiting(job_id) == 1, message="the poll parked")
        huey.cancel(job_id)
        answer = conn.getresponse()
        assert answer.status == 200 and json.loads(answer.read())["status"] == "canceled"
        assert "Retry-After" not in answer.headers
        conn.request("GET", "/api/me", headers=headers)  # the same connection
        answer = conn.getresponse()
        assert answer.status == 200 and json.loads(answer.read())["name"] == "alice"
        conn.close()


def test_a_parked_poll_is_answered_as_a_new_request(app, templates, alice, make_user):
    """The answer after waiting is made afresh: a token revoked meanwhile is refused."""
    user, headers = alice
    job_id = submit(steps, 1, 0, owner_id=user.id)
    with serving(app, threads=THREADS) as base:
        conn = http.client.HTTPConnection(base.removeprefix("http://"), timeout=60)
        conn.request("GET", f"/api/jobs/{job_id}?wait=60", headers=headers)
        wait_until(lambda: watcher.waiting(job_id) == 1, message="the poll parked")
        user.delete_instance()  # the token dies with its user
        huey.cancel(job_id)
        answer = conn.getresponse()
        body = json.loads(answer.read())
        conn.close()
        assert answer.status == 401 and body["error"]["status"] == 401


def test_a_client_that_leaves_while_parked_costs_nothing_after(app, templates, alice):
    user, headers = alice
    job_id = submit(steps, 1, 0, owner_id=user.id)
    with serving(app, threads=THREADS) as base:
        host, port = base.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(f"GET /api/jobs/{job_id}?wait=1 HTTP/1.1\r\nHost: x\r\n"
                         f"Authorization: {headers['Authorization']}\r\n\r\n".encode())
            wait_until(lambda: watcher.waiting(job_id) == 1, message="the poll parked")
        wait_until(lambda: watcher.waiting(job_id) == 0, message="its deadline")
        assert get(f"{base}/api/me", headers, timeout=30)[0] == 200


def test_under_another_server_a_waiter_holds_a_thread_within_the_cap(settings, templates,
                                                                      alice):
    """Plain waitress (or gunicorn) cannot park: waiting blocks a thread, at most
    QRQ_MAX_WAITERS at once; the others are answered at once."""
    app = create_app({"SETTINGS": dataclasses.replace(settings, max_waiters=1)})
    user, headers = alice
    job_id = submit(steps, 1, 0, owner_id=user.id)
    with serving(app, threads=4, create=plain_waitress) as base:
        answers = []
        first = in_threads(long_poll, 1, base, job_id, headers, answers)
        wait_until(lambda: watcher.waiting(job_id) == 1, message="one waiter")
        long_poll(base, job_id, headers, answers)  # over the cap: answered at once
        assert answers == [(200, "queued")]
        huey.cancel(job_id)
        first[0].join(timeout=60)
        assert answers == [(200, "queued"), (200, "canceled")]


def test_qrq_serve_serves_the_app(settings, alice):
    port = free_port()
    env = {**os.environ, "QRQ_DATA_DIR": str(settings.data_dir)}
    proc = subprocess.Popen([str(Path(sys.executable).parent / "qrq"), "serve",
                             "--host=127.0.0.1", f"--port={port}", "--threads=2"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        def answer():
            try:
                request = urllib.request.Request(f"http://127.0.0.1:{port}/api/me",
                                                 headers=alice[1])
                with urllib.request.urlopen(request, timeout=10) as response:
                    return response.status, json.loads(response.read())
            except OSError:
                return None
        status, body = wait_until(answer, message="qrq serve answering")
        assert status == 200 and body["name"] == "alice"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def test_the_open_file_limit_is_raised_as_far_as_allowed(monkeypatch):
    """The OS limit is the one part not made real here: its values are stood in for."""
    set_to = []
    monkeypatch.setattr(server.resource, "setrlimit", lambda kind, value: set_to.append(value))
    infinity = server.resource.RLIM_INFINITY
    for (soft, hard), wanted, expected, raised in [
            ((1024, 4096), 1100, 1100, (1100, 4096)), ((1024, 1050), 1100, 1050, (1050, 1050)),
            ((2048, 4096), 1100, 2048, None), ((infinity, infinity), 1100, 1100, None),
            ((1024, infinity), 5000, 5000, (5000, infinity))]:
        set_to.clear()
        monkeypatch.setattr(server.resource, "getrlimit", lambda kind, limits=(soft, hard): limits)
        assert server.raise_file_limit(wanted) == expected
        assert set_to == ([raised] if raised else [])


def raw_answer(base: str, request: bytes) -> tuple[int, dict, bytes]:
    """Send *request* as it is and read the answer to its end (the server closes)."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


def test_requests_the_server_cannot_read_get_the_one_json_error_shape(app):
    # waitress answers these itself, before the app sees them: plain text before.
    cases = [
        (b"POST /api/generate-qr-pdf HTTP/1.1\r\nHost: x\r\nContent-Length: 12x\r\n\r\n",
         400, "bad_request"),
        (b"GET /api/me HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 5000 + b"\r\n\r\n",
         431, "headers_too_large"),
        (b"POST /api/generate-qr-pdf HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
         501, "not_implemented"),
    ]
    with serving(app, max_request_header_size=4096) as base:
        for request, status, code in cases:
            got, headers, body = raw_answer(base, request)
            assert (got, headers["Content-Type"]) == (status, "application/json"), body
            error = json.loads(body)["error"]
            assert (error["status"], error["code"]) == (status, code)
            assert error["message"] and error["field"] is None
            assert "waitress" not in error["message"]
        # The server still answers afterwards, and the app's errors are as before.
        assert raw_answer(base, b"GET /api/me HTTP/1.1\r\nHost: x\r\nConnection: close"
                                b"\r\n\r\n")[0] == 401


def test_a_body_larger_than_any_route_takes_is_refused_before_it_is_read(app, settings):
    # waitress's own limit is 1 GiB, spooled to disk before the app (and its token
    # check) sees the request: anyone could fill /tmp. No route takes more than the
    # larger of the two body limits, so nothing past it is read.
    largest = max(settings.max_request_bytes, settings.max_batch_bytes)
    with serving(app) as base:
        host, port = base.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            sock.sendall(b"POST /api/generate-qr-pdf HTTP/1.1\r\nHost: x\r\n"
                         b"Content-Length: %d\r\n\r\n" % (largest + 1))
            answer = b""  # at once, from the headers: the body is never sent
            while chunk := sock.recv(65536):
                answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.split()[1] == b"413"
        assert json.loads(body)["error"]["code"] == "payload_too_large"
        # A batch body as large as its limit still gets to the app (401: no token).
        assert raw_answer(base, b"POST /api/batch/generate-qrs HTTP/1.1\r\nHost: x\r\n"
                                b"Connection: close\r\nContent-Type: application/json\r\n"
                                b"Content-Length: %d\r\n\r\n" % largest
                                + b" " * largest)[0] == 401


def open_from(base, source: str) -> socket.socket:
    """A connection to *base* from the local address *source* that sends half a request."""
    host, port = base.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30, source_address=(source, 0))
    sock.sendall(b"GET /healthz HTTP/1.1\r\n")
    return sock


def closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_one_client_cannot_take_every_connection(app, alice):
    # 127.0.0.2 opens connections and sends half a request on each (slowloris): past its
    # share (64 of 100) its new connections are closed at once, and another client
    # (127.0.0.1) is still served; a place given back can be taken again.
    with serving(app, threads=THREADS, connection_limit=100) as base:
        held = [open_from(base, "127.0.0.2") for _ in range(server.MIN_PER_CLIENT)]
        refused = open_from(base, "127.0.0.2")
        assert closed_by_server(refused)
        assert get(f"{base}/api/me", alice[1], timeout=30)[0] == 200
        held[0].sendall(b"Host: x\r\n\r\n")  # one of the held ones still works
        assert held[0].recv(12).startswith(b"HTTP/1.1 200")
        held.pop(1).close()

        def served() -> bytes:
            with open_from(base, "127.0.0.2") as sock:
                sock.sendall(b"Host: x\r\n\r\n")
                try:
                    return sock.recv(12)
                except ConnectionResetError:
                    return b""

        assert wait_until(served, message="a place again").startswith(b"HTTP/1.1 200")
        for sock in [*held, refused]:
            sock.close()


def test_a_server_on_several_addresses_keeps_its_limits_on_each(app, alice):
    # A host name with two addresses (localhost as 127.0.0.1 and ::1) makes waitress a
    # server per address behind one wrapper, whose attributes its connections never
    # read: no parking, no per-client limit (and the start-up line raised AttributeError).
    both = server.create_server(app, host=None, port=None, listen="127.0.0.1:0 127.0.0.2:0",
                                threads=THREADS, connection_limit=100)
    thread = threading.Thread(target=both.run, daemon=True)
    thread.start()
    try:
        first, second = [f"http://{one.effective_host}:{one.effective_port}"
                         for one in server.listeners(both)]
        assert get(f"{second}/api/me", alice[1], timeout=30)[0] == 200
        # One client's share counts its connections to either address.
        held = [open_from(first, "127.0.0.3") for _ in range(server.MIN_PER_CLIENT)]
        for sock in held:  # each answered (so accepted) and kept open
            sock.sendall(b"Host: x\r\n\r\n")
            assert sock.recv(12).startswith(b"HTTP/1.1 200")
        refused = open_from(second, "127.0.0.3")
        assert closed_by_server(refused)
        for sock in [*held, refused]:
            sock.close()
    finally:
        both.close()
        thread.join(timeout=10)


def test_a_clients_address_is_its_ipv4_address_or_its_ipv6_64():
    assert server.client_of(("192.0.2.7", 5000)) == "192.0.2.7"
    assert server.client_of(("::ffff:192.0.2.7", 5000, 0, 0)) == "192.0.2.7"
    assert server.client_of(("2001:db8:1:2:aaaa::1", 5000, 0, 0)) \
        == server.client_of(("2001:db8:1:2:bbbb::9", 5000, 0, 0)) == "2001:db8:1:2::/64"
    assert server.client_of(("2001:db8:1:3::1", 5000, 0, 0)) == "2001:db8:1:3::/64"
    assert server.client_of("") == "local"


def test_a_slow_reader_gets_what_a_blocked_task_wrote(settings):
    # A task writes 8 MiB (more than the socket takes while the client does not read),
    # then blocks without parking (a held thread, a slow store). What it could not send
    # must go out as the client reads, not wait for the task's next write.
    wrote, release = threading.Event(), threading.Event()
    big = 8 * 1024 * 1024

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/octet-stream")])

        def body():
            yield b"x" * big
            wrote.set()
            release.wait(60)
            yield b"END"
        return body()

    app.config = {"QRQ": settings}
    with serving(app, threads=THREADS) as base:
        host, port = base.removeprefix("http://").split(":")
        with socket.socket() as sock:
            # A small window, so that the 8 MiB cannot all sit in the kernel's buffers.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            sock.settimeout(30)
            sock.connect((host, int(port)))
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert wrote.wait(30)  # the task is past its big write, and blocked
            received = 0  # bytes, headers and chunk sizes too: at least the 8 MiB
            try:
                while received < big:
                    chunk = sock.recv(1 << 20)
                    assert chunk, "the server closed the connection"
                    received += len(chunk)
            finally:
                release.set()
            rest = b""
            while b"END" not in rest:
                chunk = sock.recv(1 << 16)
                assert chunk, "the server closed the connection"
                rest = rest[-64:] + chunk
