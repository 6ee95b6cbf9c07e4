"""``qrq.client`` against a real waitress server and a real consumer, end to end; and
against small HTTP servers on 127.0.0.1 that misbehave on purpose (redirects to another
origin, no answer, answers cut short)."""

import contextlib
import dataclasses
import http.server
import json
import socket
import threading

import pytest

from qrq.client import (
    Client,
    ConnectionFailed,
    JobNotFinished,
    NotFound,
    ServerError,
    Unauthorized,
    ValidationError,
    WaitTimeout,
)
from qrq.queue import submit
from qrq.web import create_app
from tests.conftest import wait_until
from tests.live import live, serving  # noqa: F401 (fixture)
from tests.slow_tasks import steps
from tests.test_analytics_api import ARGS, scan_dbs  # noqa: F401 (fixture)


def token_of(headers):
    return headers["Authorization"].split(" ", 1)[1]


def test_the_client_drives_a_real_server_end_to_end(live, templates, alice, consumer,  # noqa: F811
                                                    tmp_path):
    api = Client(live, token_of(alice[1]))
    job = api.submit_pdf(1, {"copies": 2})
    # Nothing runs yet: typed errors, a wait that gives up, a 409 download.
    with pytest.raises(JobNotFinished) as refused:
        api.download(job["job_id"])
    assert refused.value.status == 409 and refused.value.job_status == "queued"
    with pytest.raises(WaitTimeout) as late:
        api.wait(job["job_id"], timeout=1)
    assert late.value.job["status"] == "queued"
    batch = api.submit_batch([{"template_id": 1, "data": f"item {n}"} for n in range(5)])
    consumer()
    done = api.wait(job["job_id"], timeout=120)
    assert done["status"] == "finished"
    path = api.download(job["job_id"], tmp_path / "cards.pdf")
    assert path.read_bytes().startswith(b"%PDF")
    assert api.wait(batch["batch_job_id"], timeout=120)["status"] == "finished"
    items = list(api.iter_items(batch["batch_job_id"], limit=2))  # three pages
    assert [i["idx"] for i in items] == list(range(5))
    assert {i["status"] for i in items} == {"ok"}
    assert api.download(batch["batch_job_id"], kind="zip").startswith(b"PK")
    assert {j["job_id"] for j in api.iter_jobs(limit=1)} >= {job["job_id"],
                                                             batch["batch_job_id"]}


def test_the_client_maps_the_error_shape_to_typed_errors(live, templates, alice):  # noqa: F811
    api = Client(live, token_of(alice[1]))
    with pytest.raises(NotFound) as missing:
        api.job("00000000-0000-0000-0000-000000000000")
    assert missing.value.code == "not_found" and missing.value.status == 404
    with pytest.raises(ValidationError) as bad:
        api.submit_pdf(99999)
    assert bad.value.field == "template_id"
    with pytest.raises(Unauthorized):
        Client(live, "qrq_wrong").job("00000000-0000-0000-0000-000000000000")


def test_wait_does_not_busy_poll_a_server_that_holds_no_waiters(settings, templates, alice):
    """QRQ_MAX_WAITERS=0: every ?wait= is answered at once; the client waits Retry-After."""
    app = create_app({"SETTINGS": dataclasses.replace(settings, max_waiters=0)})
    asked = []
    app.before_request(lambda: asked.append(1) and None)
    with serving(app, threads=2) as base:
        api = Client(base, token_of(alice[1]))
        job_id = submit(steps, 1, 0, owner_id=alice[0].id)  # stays queued: no consumer
        with pytest.raises(WaitTimeout):
            api.wait(job_id, timeout=3)
    assert len(asked) <= 6  # about one request per Retry-After (2 s), not hundreds


def test_analytics_returns_the_report_computed_or_cached_and_any_user_may_follow_it(
        live, alice, make_user, scan_dbs, consumer):  # noqa: F811
    _, bob = make_user("bob")
    consumer()
    report = Client(live, token_of(alice[1])).analytics(**ARGS, timeout=120)
    assert report["params"]["period"] == "weekly" and report["series"]
    assert report["databases"]["read"] == 4
    cached = Client(live, token_of(bob)).analytics(**ARGS)  # 200 from the cache
    assert cached["series"] == report["series"] and "age_seconds" in cached


def test_batch_status_and_retrying_its_failed_items(live, templates, alice, consumer):  # noqa: F811
    api = Client(live, token_of(alice[1]))
    batch = api.submit_batch([{"template_id": 3, "data": "ok"},
                              {"template_id": 3, "data": "y" * 2500}])  # too long: fails
    consumer()
    assert api.wait(batch["batch_job_id"], timeout=120)["status"] == "finished"
    retry = api.retry_failed(batch["batch_job_id"])
    assert retry["parent_job_id"] == batch["batch_job_id"] and retry["total_items"] == 1
    shown = api.batch(batch["batch_job_id"])
    assert (shown["completed"], shown["failed"]) == (1, 1)
    assert shown["retry_job_ids"] == [retry["batch_job_id"]]


# -- servers that misbehave -------------------------------------------------------------

@contextlib.contextmanager
def http_server(handle, port=0):
    """A plain HTTP server on 127.0.0.1 (*port*, default any) whose GETs *handle*
    answers: ``handle(request)`` with the handler (path, headers, and wfile to write
    to); its base URL."""
    seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            seen.append((self.path, dict(self.headers)))
            handle(self)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def answer(handler, status, body=b"", headers=()):
    handler.send_response(status)
    for name, value in headers:
        handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def test_a_download_redirected_to_another_origin_goes_there_without_the_token():
    # The artifact store's presigned URL: another host (localhost, not 127.0.0.1) and port.
    with http_server(lambda h: answer(h, 200, b"%PDF-1.4 stored")) as (store, at_store):
        store_port = store.rsplit(":", 1)[1]

        def api(handler):
            if handler.path.endswith("/download"):
                answer(handler, 302, headers=[
                    ("Location", f"http://localhost:{store_port}/cards/x.pdf?sig=1")])
            else:  # a redirect inside the API keeps the token
                answer(handler, 302, headers=[("Location", "/api/jobs/moved")]) \
                    if handler.path != "/api/jobs/moved" else \
                    answer(handler, 200, b'{"job_id": "moved", "status": "queued"}')

        with http_server(api) as (base, at_api):
            client = Client(base, "qrq_secret-token")
            assert client.download("x") == b"%PDF-1.4 stored"
            assert client.job("elsewhere")["job_id"] == "moved"
    assert at_api[0][1]["Authorization"] == "Bearer qrq_secret-token"
    assert at_store[0][0] == "/cards/x.pdf?sig=1"
    assert "Authorization" not in at_store[0][1], at_store
    assert [path for path, _ in at_api] == ["/api/jobs/x/download", "/api/jobs/elsewhere",
                                            "/api/jobs/moved"]
    assert at_api[2][1]["Authorization"] == "Bearer qrq_secret-token"


def test_no_usable_answer_is_a_connection_failed_error():
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, not listening: refused
        with pytest.raises(ConnectionFailed) as refused:
            Client(f"http://127.0.0.1:{port}", "t").job("x")
    assert refused.value.code == "unreachable" and refused.value.status == 0

    def cut_short(handler):
        handler.send_response(200)
        handler.send_header("Content-Length", "100")
        handler.end_headers()
        handler.wfile.write(b'{"job_id"')
        handler.close_connection = True

    with http_server(cut_short) as (base, _):
        with pytest.raises(ConnectionFailed) as cut:
            Client(base, "t").job("x")
    assert cut.value.code == "bad_answer"
    with http_server(lambda h: answer(h, 200, b"<html>a proxy</html>")) as (base, _):
        with pytest.raises(ConnectionFailed) as html:
            Client(base, "t").job("x")
    assert html.value.code == "bad_answer" and html.value.status == 200
    released = threading.Event()
    with http_server(lambda h: released.wait(30)) as (base, _):
        with pytest.raises(ConnectionFailed) as slow:
            Client(base, "t", timeout=0.5).job("x")
        released.set()
    assert slow.value.code == "timeout"


def test_wait_waits_out_a_busy_or_restarting_server_and_gives_up_on_a_broken_one():
    answers = iter([(200, {"job_id": "j", "status": "queued"}),
                    (503, {"error": {"code": "unavailable", "message": "restarting"}}),
                    (429, {"error": {"code": "too_many_attempts", "message": "later"}}),
                    (200, {"job_id": "j", "status": "finished"})])

    def busy(handler):
        status, body = next(answers)
        answer(handler, status, json.dumps(body).encode(), [("Retry-After", "0.1")])

    with http_server(busy) as (base, seen):
        assert Client(base, "t").wait("j", timeout=30)["status"] == "finished"
    assert len(seen) == 4

    def broken(handler):
        answer(handler, 500, b'{"error": {"code": "internal", "message": "bug"}}')

    with http_server(broken) as (base, seen):
        with pytest.raises(ServerError) as failed:
            Client(base, "t").wait("j", timeout=30)
    assert failed.value.status == 500 and len(seen) == 1  # not retried: a bug, not a wait


def test_wait_waits_out_a_load_balancer_answering_for_a_restarting_server():
    answers = iter([(200, b'{"job_id": "j", "status": "running"}'),
                    (502, b"<html>bad gateway"), (504, b"<html>gateway timeout"),
                    (200, b'{"job_id": "j", "status": "failed"}')])

    def balancer(handler):
        status, body = next(answers)
        answer(handler, status, body, [("Retry-After", "0.1")])

    with http_server(balancer) as (base, seen):
        assert Client(base, "t").wait("j", timeout=30)["status"] == "failed"
    assert len(seen) == 4


def test_wait_waits_out_a_server_that_breaks_off_its_first_long_poll():
    calls = []

    def restarting(handler):
        calls.append(1)
        if len(calls) == 1:  # reached, then gone before it answered (a restart)
            handler.close_connection = True
            return
        answer(handler, 200, b'{"job_id": "j", "status": "finished"}')

    with http_server(restarting) as (base, seen):
        assert Client(base, "t").wait("j", timeout=30)["status"] == "finished"
    assert len(seen) == 2


class Watched(Client):
    """A client that notes each failed request (the test's view of its retries)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.failed, self.timeouts = [], []

    def _request(self, *args, **kwargs):
        self.timeouts.append(kwargs.get("timeout"))
        try:
            return super()._request(*args, **kwargs)
        except ConnectionFailed as exc:
            self.failed.append(exc.code)
            raise


def test_wait_waits_out_a_restart_that_begins_during_its_first_long_poll():
    # The job is queued, so the first long-poll is held: no answer has come when the
    # server goes away, and its port refuses connections until it is back.
    def going(handler):
        handler.close_connection = True

    with http_server(going) as (base, _):
        client = Watched(base, "t")
        outcome = {}

        def waiting():
            try:
                outcome["job"] = client.wait("j", timeout=30)
            except Exception as exc:
                outcome["error"] = exc

        thread = threading.Thread(target=waiting)
        thread.start()
        wait_until(lambda: client.failed, message="the first long-poll broken off")
    wait_until(lambda: "unreachable" in client.failed or outcome, message="refused")
    finished = b'{"job_id": "j", "status": "finished"}'
    with http_server(lambda h: answer(h, 200, finished), port=int(base.rsplit(":", 1)[1])):
        thread.join(30)
    assert outcome == {"job": {"job_id": "j", "status": "finished"}}, outcome


def test_wait_that_gives_up_raises_wait_timeout_on_time_whatever_the_server_does():
    released = threading.Event()
    with http_server(lambda h: released.wait(30)) as (base, _):  # takes and never answers
        client = Watched(base, "t", timeout=30)
        with pytest.raises(WaitTimeout) as stalled:
            client.wait("j", timeout=2)
        released.set()
    assert stalled.value.job is None and "no answer" in str(stalled.value)
    # Each request may outlast the wait's deadline by a second, not by the client's
    # 30 s timeout for one request.
    assert client.timeouts and max(client.timeouts) <= 3, client.timeouts
    busy = b'{"error": {"code": "unavailable", "message": "restarting"}}'
    with http_server(lambda h: answer(h, 503, busy, [("Retry-After", "0.2")])) as (base, _):
        with pytest.raises(WaitTimeout) as unavailable:
            Client(base, "t").wait("j", timeout=1)
    assert "restarting" in str(unavailable.value)


def test_an_id_is_one_path_segment_whatever_it_holds():
    with http_server(lambda h: answer(h, 404, b'{"error": {"code": "not_found", '
                                             b'"message": "no such job"}}')) as (base, seen):
        client = Client(base, "t")
        for odd in ("../me", "..", "a?b#c"):
            with pytest.raises(NotFound):
                client.job(odd)
    assert [path for path, _ in seen] == ["/api/jobs/%2E%2E%2Fme", "/api/jobs/%2E%2E",
                                          "/api/jobs/a%3Fb%23c"]
