"""Webhooks: a real consumer posts the final job record to a real local HTTP server,
signed, retried after a 500, as a ``webhook`` job of its own (issue 17)."""

import dataclasses
import hashlib
import hmac
import ipaddress
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from qrq import webhooks
from qrq.queue import audit, huey, jobs
from qrq.web import create_app
from tests.conftest import wait_until
from tests.test_admission import post_together, serve  # noqa: F401 (a fixture)
from tests.test_api import assert_error

ALLOW = {"QRQ_WEBHOOK_ALLOW_PRIVATE": "true", "QRQ_RETRY_DELAY": "0.2"}


class Receiver:
    """A real HTTP server on 127.0.0.1 that answers 500 to the first *fail* POSTs."""

    def __init__(self, fail=0):
        self.received, self.fail = [], fail
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append((dict(self.headers), body))
                self.send_response(500 if len(receiver.received) <= receiver.fail else 204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook?x=1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    made = []

    def make(fail=0):
        made.append(Receiver(fail))
        return made[-1]

    yield make
    for one in made:
        one.close()


@pytest.fixture
def open_client(settings):
    """A client of an app that allows private callback URLs (the receiver is local)."""
    allowed = dataclasses.replace(settings, webhook_allow_private=True)
    return create_app({"SETTINGS": allowed, "TESTING": True}).test_client()


def verify(secret, headers, body):
    """The receiver's check, as the README shows it."""
    expected = hmac.new(secret.encode(), headers["X-Qrq-Timestamp"].encode() + b"." + body,
                        hashlib.sha256).hexdigest()
    return hmac.compare_digest(headers["X-Qrq-Signature"], "v1=" + expected)


def test_a_webhook_reaches_a_real_server_signed_and_is_retried_after_a_500(
        open_client, templates, alice, make_user, consumer, receiver):
    hook = receiver(fail=1)
    headers = alice[1]
    answer = open_client.post("/api/generate-qr-pdf", headers=headers,
                              json={"template_id": 1, "callback_url": hook.url})
    assert answer.status_code == 202, answer.get_json()
    job_id = answer.get_json()["job_id"]
    consumer(extra_env=ALLOW)
    wait_until(lambda: len(hook.received) >= 2, timeout=60, message="two deliveries")
    secret = open_client.get("/api/me/webhook", headers=headers).get_json()["secret"]
    for sent_headers, body in hook.received:
        assert verify(secret, sent_headers, body)
        assert not verify(secret + "x", sent_headers, body)
    record = json.loads(hook.received[-1][1])
    assert record["event"] == "job.ended"
    assert record["job"]["job_id"] == job_id and record["job"]["status"] == "finished"
    # The delivery is a job of its own, listed like others; the job itself is untouched.
    found = open_client.get("/api/jobs?type=webhook", headers=headers).get_json()["jobs"]
    assert len(found) == 1 and found[0]["params"]["job_id"] == job_id
    delivery = wait_until(lambda: jobs.get(huey.storage, found[0]["job_id"])["status"]
                          == "finished" and jobs.get(huey.storage, found[0]["job_id"]))
    assert delivery["attempts"] == 2 and delivery["owner_id"] == alice[0].id
    assert jobs.get(huey.storage, job_id)["status"] == "finished"
    # ... and in the dashboard, like any other job.
    _, admin = make_user("root", admin=True)
    page = open_client.get("/admin/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    assert open_client.post("/admin/login", data={
        "name": "root", "token": admin["Authorization"].split(" ", 1)[1],
        "csrf_token": csrf}).status_code == 302
    listing = open_client.get("/admin/jobs?type=webhook").text
    assert delivery["id"][:8] in listing and "webhook.deliver" in listing


def test_a_replaced_secret_signs_the_deliveries_queued_before(
        open_client, templates, alice, make_user, consumer, receiver):
    hook = receiver()
    headers = alice[1]
    _, bob = make_user("bob")
    old = open_client.get("/api/me/webhook", headers=headers).get_json()["secret"]
    bobs = open_client.get("/api/me/webhook", headers=bob).get_json()["secret"]
    answer = open_client.post("/api/generate-qr-pdf", headers=headers,
                              json={"template_id": 1, "callback_url": hook.url})
    assert answer.status_code == 202
    replaced = open_client.post("/api/me/webhook/secret", headers=headers)
    assert replaced.status_code == 200
    new = replaced.get_json()["secret"]
    assert new != old and len(new) == len(old)
    assert open_client.get("/api/me/webhook", headers=headers).get_json()["secret"] == new
    assert open_client.post("/api/me/webhook/secret", headers=headers).get_json()[
        "secret"] not in (old, new)  # each replacement is a new one
    newest = open_client.get("/api/me/webhook", headers=headers).get_json()["secret"]
    # Another user's secret is theirs alone.
    assert open_client.get("/api/me/webhook", headers=bob).get_json()["secret"] == bobs
    consumer(extra_env=ALLOW)
    wait_until(lambda: hook.received, timeout=60, message="the delivery")
    sent_headers, body = hook.received[0]
    assert verify(newest, sent_headers, body) and not verify(old, sent_headers, body)
    logged, _ = audit.entries(huey.storage, action="webhook.replace_secret")
    assert [entry["actor"] for entry in logged] == ["alice", "alice"]
    assert open_client.post("/api/me/webhook/secret").status_code == 401


def test_a_users_default_callback_serves_a_batch(open_client, templates, alice, consumer,
                                                 receiver):
    hook = receiver()
    headers = alice[1]
    answer = open_client.put("/api/me/webhook", headers=headers, json={"callback_url": hook.url})
    assert answer.status_code == 200 and answer.get_json()["callback_url"] == hook.url
    body = open_client.post("/api/batch/generate-qrs", headers=headers, json={
        "items": [{"template_id": 1, "data": "a"}]}).get_json()
    consumer(extra_env=ALLOW)
    wait_until(lambda: hook.received, timeout=60, message="the batch's webhook")
    record = json.loads(hook.received[0][1])["job"]
    assert record["job_id"] == body["batch_job_id"] and record["status"] == "finished"


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8000/x", "http://localhost/x", "http://10.1.2.3/", "http://192.168.0.1/",
    "http://169.254.169.254/latest/meta-data/", "http://[::1]/", "http://[fe80::1]/",
    "http://[::ffff:127.0.0.1]/", "http://0.0.0.0/", "ftp://example.com/", "not a url", 5,
    # IPv4 inside IPv6 (NAT64, 6to4), and multicast
    "http://[64:ff9b::7f00:1]/", "http://[64:ff9b::a9fe:a9fe]/", "http://[2002:7f00:1::]/",
    "http://224.0.0.1/", "http://[ff02::1]/",
    # IPv4-compatible, IPv4-translated, local-use NAT64, Teredo
    "http://[::7f00:1]:18121/x", "http://[::a9fe:a9fe]/", "http://[::ffff:0:7f00:1]/",
    "http://[::ffff:0:a00:1]/", "http://[64:ff9b:1::a00:1]/", "http://[64:ff9b:1::808:808]/",
    "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",
    # special-use ranges Python 3.11 calls global: IETF protocol assignments, 6to4 relays
    "http://192.0.0.8/", "http://192.0.0.170/", "http://192.88.99.1/", "http://[::ffff:c000:8]/",
    # never sendable: a space, a control character, a path or query not in ASCII
    "http://8.8.8.8/a b", "http://8.8.8.8/a\x00b", "http://8.8.8.8/a\tb", "http://8.8.8.8/\x7f",
    "http://8.8.8.8/a\r\nX: 1", "http://8.8.8.8/é", "http://8.8.8.8/?q=\u2028",
    # urllib cannot split these (it raises ValueError)
    "http://[::1", "http://[]/", "http://\u2100/", "http://a:b@[x"])
def test_private_addresses_and_non_http_urls_are_refused(client, templates, alice, url):
    headers = alice[1]
    assert_error(client.post("/api/generate-qr-pdf", headers=headers,
                             json={"template_id": 1, "callback_url": url}), 422, "callback_url")
    assert_error(client.post("/api/batch/generate-qrs", headers=headers, json={
        "items": [{"template_id": 1, "data": "a"}], "callback_url": url}), 422, "callback_url")
    assert_error(client.put("/api/me/webhook", headers=headers, json={"callback_url": url}),
                 422, "callback_url")
    assert huey.storage.queue_size() == 0


def test_delivery_checks_the_address_again(receiver):
    hook = receiver()
    with pytest.raises(webhooks.WebhookRefused):
        webhooks.deliver(hook.url, b"{}", "s", allow_private=False)
    assert hook.received == []
    assert webhooks.deliver(hook.url, b"{}", "s", allow_private=True) == 204


@pytest.mark.parametrize("url", ["http://[::7f00:1]:18121/x", "http://[::ffff:0:7f00:1]/",
                                 "http://[64:ff9b:1::a00:1]/"])
def test_delivery_refuses_an_ipv4_address_inside_ipv6(url):
    with pytest.raises(webhooks.WebhookRefused):
        webhooks.deliver(url, b"{}", "s", allow_private=False, timeout=0.5)


def test_an_ipv4_address_inside_ipv6_is_judged_as_that_ipv4_address():
    for private in ("::7f00:1", "::ffff:0:7f00:1", "64:ff9b::a00:1", "2002:a00:1::1"):
        assert not webhooks._public(ipaddress.ip_address(private)), private
    for public in ("::808:808", "::ffff:0:808:808", "64:ff9b::808:808", "2002:808:808::1",
                   "2606:4700:4700::1111"):
        assert webhooks._public(ipaddress.ip_address(public)), public
    assert not webhooks._public(ipaddress.ip_address("64:ff9b:1::808:808"))  # local-use


def test_delivery_refuses_a_path_it_cannot_send_and_wraps_what_http_client_raises(receiver):
    """A URL stored before it was checked at submit is refused, not a bare
    UnicodeEncodeError; anything http.client cannot send is a DeliveryFailed."""
    hook = receiver()
    with pytest.raises(webhooks.WebhookRefused):
        webhooks.deliver(hook.url + "é", b"{}", "s", allow_private=True)
    with pytest.raises(webhooks.DeliveryFailed):
        webhooks.deliver(hook.url, b"{}", "s", allow_private=True, delivery_id="a\r\nX: 1")
    assert hook.received == []


def test_a_public_callback_is_kept_and_null_opts_out_of_the_default(client, templates, alice):
    headers = alice[1]
    public = "https://93.184.215.14:8443/hook"  # a literal address: no DNS needed
    assert client.put("/api/me/webhook", headers=headers,
                      json={"callback_url": public}).status_code == 200
    given = client.post("/api/generate-qr-pdf", headers=headers,
                        json={"template_id": 1}).get_json()["job_id"]
    assert webhooks.target_of(huey.storage, given)["url"] == public
    none = client.post("/api/generate-qr-pdf", headers=headers,
                       json={"template_id": 1, "callback_url": None}).get_json()["job_id"]
    assert webhooks.target_of(huey.storage, none) is None


def webhook_targets():
    return huey.storage.sql("select job_id, url from webhook_target", results=True)


def test_a_repeated_idempotency_key_keeps_one_job_and_one_webhook(
        open_client, templates, alice, consumer, receiver):
    hook = receiver()
    headers = {**alice[1], "Idempotency-Key": "order-17"}
    body = {"template_id": 1, "callback_url": hook.url}
    first = open_client.post("/api/generate-qr-pdf", headers=headers, json=body)
    again = open_client.post("/api/generate-qr-pdf", headers=headers, json=body)
    assert first.status_code == again.status_code == 202
    job_id = first.get_json()["job_id"]
    assert again.get_json()["job_id"] == job_id
    assert again.headers["Idempotent-Replayed"] == "true"
    # The same key with another callback is another request: refused, nothing recorded.
    assert_error(open_client.post("/api/generate-qr-pdf", headers=headers,
                                  json={**body, "callback_url": hook.url + "&y=2"}),
                 422, "Idempotency-Key")
    assert webhook_targets() == [(job_id, hook.url)]
    consumer(extra_env=ALLOW)
    found = wait_until(lambda: open_client.get("/api/jobs?type=webhook&status=finished",
                                               headers=alice[1]).get_json()["jobs"],
                       timeout=60, message="the webhook job finished")
    assert len(found) == 1 and found[0]["params"]["job_id"] == job_id
    assert len(hook.received) == 1
    assert len(open_client.get("/api/jobs?type=webhook", headers=alice[1])
               .get_json()["jobs"]) == 1


def test_concurrent_posts_with_one_key_and_a_callback_record_one_target(
        settings, templates, alice, serve):  # noqa: F811 (the fixture)
    allowed = dataclasses.replace(settings, webhook_allow_private=True)
    base = serve(create_app({"SETTINGS": allowed}))
    url = "http://127.0.0.1:9/hook"
    for path, body in (("/api/generate-qr-pdf", {"template_id": 1, "callback_url": url}),
                       ("/api/batch/generate-qrs", {"items": [{"template_id": 1, "data": "a"}],
                                                    "callback_url": url})):
        huey.storage.sql("delete from webhook_target", commit=True)
        headers = {**alice[1], "Idempotency-Key": "same-request" + path}
        answers = post_together(base + path, [body] * 8, [headers] * 8)
        assert {status for status, _ in answers} == {202}
        ids = {answer.get("job_id") or answer.get("batch_job_id") for _, answer in answers}
        assert len(ids) == 1
        assert webhook_targets() == [(ids.pop(), url)]
