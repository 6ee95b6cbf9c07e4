"""The OpenAPI document states the answers that come from outside an operation's own code:
the token check's 401 and 429, a download's ranges and ETags (206, 304, 416), and the
webhook deliveries qrq POSTs to callback URLs. Checked with real requests and a real
receiver."""

import gc
import json
import re

import jsonschema_rs
import pytest
import schemathesis
from schemathesis.specs.openapi.checks import response_headers_conformance

from qrq.appdb import throttle
from qrq.web.openapi import SPEC
from tests.test_api import assert_error
from tests.test_openapi import (
    CHECKS,
    SAMPLE_PARAMS,
    check_error_shape,
    run_queue,
    spec_routes,
)
from tests.test_webhooks import receiver  # noqa: F401 (a fixture)


def operations_with_a_token():
    """Every (path, method, operation) of the document that needs a token."""
    return [(path, method, operation) for path, item in SPEC["paths"].items()
            for method, operation in item.items() if operation.get("security") != []]


def test_every_operation_with_a_token_lists_401_and_429():
    found = operations_with_a_token()
    # All but the document itself.
    assert {(path, method.upper()) for path, method, _ in found} == \
        spec_routes(SPEC) - {("/api/openapi.json", "GET")}
    for path, method, operation in found:
        assert {"401", "429"} <= set(operation["responses"]), (path, method)


def test_a_locked_out_address_gets_429_from_every_operation_with_a_token(client, alice):
    """While an address is locked out, a good token gets 429 too_many_attempts (with
    Retry-After) from every operation that takes one, as the document says."""
    address = {"REMOTE_ADDR": "198.51.100.7"}
    for _ in range(throttle.LIMIT):
        client.get("/api/me", headers={"Authorization": "Bearer qrq_wrong"},
                   environ_base=address)
    for path, method, operation in operations_with_a_token():
        url = re.sub(r"\{(\w+)\}", lambda m: SAMPLE_PARAMS.get(m.group(1), "1"), path)
        response = client.open(url, method=method.upper(), headers=alice[1],
                               environ_base=address)
        assert assert_error(response, 429)["code"] == "too_many_attempts", (path, method)
        assert int(response.headers["Retry-After"]) > 0
        assert "429" in operation["responses"], (path, method)


# -- downloads: ranges and ETags ------------------------------------------------------------

@pytest.fixture
def downloads(app, client, templates, make_user):
    """(operation, URL, admin headers) of each download of finished jobs: a PDF job's, and
    a batch's PDF and ZIP."""
    _, admin = make_user("root", admin=True)
    pdf = client.post("/api/generate-qr-pdf", json={"template_id": 1}, headers=admin)
    batch = client.post("/api/batch/generate-qrs", json={"template_ids": [1]}, headers=admin)
    run_queue()
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", app)
    pdf_id, batch_id = pdf.get_json()["job_id"], batch.get_json()["batch_job_id"]
    return [(schema["/api/jobs/{job_id}/download"]["GET"], f"/api/jobs/{pdf_id}/download",
             admin),
            *[(schema["/api/batch/{job_id}/download/{kind}"]["GET"],
               f"/api/batch/{batch_id}/download/{kind}", admin) for kind in ("pdf", "zip")]]


def answer(client, operation, url, admin, headers):
    """The real answer to GET *url* with *headers*, checked against *operation* in the
    document: a documented status, body and headers."""
    response = client.get(url, headers={**admin, **headers})
    response.get_data()
    response.close()  # a file's answer holds it open until closed
    operation.Case().validate_response(
        response, checks=[*CHECKS, response_headers_conformance],
        additional_checks=[check_error_shape])
    return response


def test_ranges_and_etags_of_downloads_are_documented(client, downloads):
    for operation, url, admin in downloads:
        whole = answer(client, operation, url, admin, {})
        assert whole.status_code == 200 and whole.headers["Accept-Ranges"] == "bytes"
        etag = whole.headers["ETag"]
        part = answer(client, operation, url, admin, {"Range": "bytes=0-9"})
        assert part.status_code == 206 and part.data == whole.data[:10]
        stale = answer(client, operation, url, admin, {"Range": "bytes=0-9", "If-Range": '"x"'})
        assert stale.status_code == 200
        same = answer(client, operation, url, admin, {"If-None-Match": etag})
        assert same.status_code == 304 and not same.data


def test_an_unsatisfiable_range_is_a_documented_416_in_the_error_shape(client, downloads):
    # The file opened for the download is closed, not left to the garbage collector
    # (pytest turns its ResourceWarning into an error).
    for operation, url, admin in downloads:
        size = len(answer(client, operation, url, admin, {}).data)
        for ranges in (f"bytes={size}-", "bytes=0-1,4-5", "bogus"):
            refused = answer(client, operation, url, admin, {"Range": ranges})
            assert assert_error(refused, 416)["code"] == "requested_range_not_satisfiable"
            assert refused.headers["Content-Range"] == f"bytes */{size}"
        gc.collect()


def test_an_if_match_that_does_not_match_is_a_documented_412_in_the_error_shape(client,
                                                                               downloads):
    for operation, url, admin in downloads:
        etag = answer(client, operation, url, admin, {}).headers["ETag"]
        refused = answer(client, operation, url, admin, {"If-Match": '"another"'})
        assert assert_error(refused, 412)["code"] == "precondition_failed"
        assert answer(client, operation, url, admin, {"If-Match": etag}).status_code == 200
        gc.collect()


def test_an_items_code_ignores_ranges_and_etags_as_documented(client, downloads):
    operation, url, admin = downloads[1]
    operation = operation.schema["/api/batch/{job_id}/items/{idx}/{fmt}"]["GET"]
    for fmt in ("svg", "png"):
        code_url = url.replace("/download/pdf", f"/items/0/{fmt}")
        for headers in ({"Range": "bytes=0-9"}, {"If-None-Match": "*"}):
            assert answer(client, operation, code_url, admin, headers).status_code == 200
    assert not {"206", "304", "416"} & set(operation.definition.raw["responses"])


# -- webhook deliveries -------------------------------------------------------------------

@pytest.fixture
def local_callbacks(monkeypatch):
    """Deliveries may go to the receiver on 127.0.0.1: set before ``settings`` reads the
    environment, for the app and for the deliveries run in this process."""
    monkeypatch.setenv("QRQ_WEBHOOK_ALLOW_PRIVATE", "true")


def documented(schema):
    """A validator of *schema*, whose references point into the document."""
    return jsonschema_rs.Draft202012Validator({**schema, "components": SPEC["components"]},
                                              validate_formats=True)


@pytest.mark.usefixtures("local_callbacks")
def test_real_deliveries_match_the_documented_webhook(client, templates, alice,
                                                      receiver):  # noqa: F811
    hook = receiver()
    headers = alice[1]
    posted = [client.post("/api/generate-qr-pdf", headers=headers,
                          json={"template_id": 1, "callback_url": hook.url}),
              client.post("/api/batch/generate-qrs", headers=headers,
                          json={"template_ids": [1], "callback_url": hook.url})]
    canceled = client.post("/api/generate-qr-pdf", headers=headers,
                           json={"template_id": 1, "callback_url": hook.url})
    assert client.delete(f"/api/jobs/{canceled.get_json()['job_id']}",
                         headers=headers).status_code == 202
    run_queue()  # the jobs, then their deliveries, each POSTed to the receiver
    assert all(answer.status_code == 202 for answer in posted)
    assert len(hook.received) == 3
    webhook = SPEC["webhooks"]["jobEnded"]["post"]
    body_schema = webhook["requestBody"]["content"]["application/json"]["schema"]
    statuses = set()
    for sent_headers, body in hook.received:
        record = json.loads(body)
        errors = [error.message for error in documented(body_schema).iter_errors(record)]
        assert not errors, (errors, record)
        statuses.add(record["job"]["status"])
        sent = {name.lower(): value for name, value in sent_headers.items()}
        for parameter in webhook["parameters"]:
            value = sent[parameter["name"].lower()]
            assert documented(parameter["schema"]).is_valid(value), (parameter, value)
    assert statuses == {"finished", "canceled"}
    # The status API's Job is another shape: the delivery is not documented as one.
    job = json.loads(hook.received[0][1])["job"]
    assert not documented({"$ref": "#/components/schemas/Job"}).is_valid(job)
