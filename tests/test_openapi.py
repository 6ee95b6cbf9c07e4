"""The OpenAPI document at /api/openapi.json: true to the app's routes, and the API
fuzzed from it (schemathesis through the WSGI interface): no 5xx, every response as
documented, every error in the one error shape."""

import atexit
import itertools
import re
import shutil
import tempfile

import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis.configuration import set_hypothesis_home_dir
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    response_schema_conformance,
    status_code_conformance,
)

from qrq.errors import ValidationError
from qrq.queue import huey
from qrq.web.openapi import SPEC
from tests.test_api import assert_error

# Hypothesis keeps caches in ./.hypothesis; keep the checkout clean.
HYPOTHESIS_HOME = tempfile.mkdtemp(prefix="qrq-hypothesis-")
set_hypothesis_home_dir(HYPOTHESIS_HOME)
atexit.register(shutil.rmtree, HYPOTHESIS_HOME, ignore_errors=True)

METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE"}
ERROR_REF = {"$ref": "#/components/schemas/Error"}


def app_routes(app):
    """Every (path, METHOD) under /api that the app answers, in OpenAPI's path syntax."""
    found = set()
    for rule in app.url_map.iter_rules():
        if rule.rule == "/api" or rule.rule.startswith("/api/"):
            path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
            found |= {(path, method) for method in rule.methods & METHODS}
    return found


def spec_routes(spec):
    return {(path, method.upper()) for path, item in spec["paths"].items()
            for method in item if method.upper() in METHODS}


def test_the_document_lists_exactly_the_apps_api_routes(app):
    in_app, in_spec = app_routes(app), spec_routes(SPEC)
    assert not in_app - in_spec, f"routes missing from qrq/web/openapi.py: {in_app - in_spec}"
    assert not in_spec - in_app, f"documented routes the app lacks: {in_spec - in_app}"


def test_every_error_response_uses_the_one_error_schema():
    responses = SPEC["components"]["responses"]
    for path, item in SPEC["paths"].items():
        for method, operation in item.items():
            assert operation["responses"], (path, method)
            for status, response in operation["responses"].items():
                if int(status) < 400:
                    continue
                name = response["$ref"].rsplit("/", 1)[-1]
                schema = responses[name]["content"]["application/json"]["schema"]
                assert schema == ERROR_REF, (path, method, status)
            if operation.get("security") != []:
                assert "401" in operation["responses"], (path, method)
    error = SPEC["components"]["schemas"]["Error"]["properties"]["error"]
    assert error["required"] == ["status", "code", "message", "field"]


def test_the_document_is_served_valid_openapi_3_1(client, app):
    response = client.get("/api/openapi.json")  # no token needed
    assert response.status_code == 200 and response.get_json() == SPEC
    assert SPEC["openapi"].startswith("3.1")
    schemathesis.openapi.from_wsgi("/api/openapi.json", app).validate()


SAMPLE_PARAMS = {"job_id": "00000000-0000-0000-0000-000000000000", "kind": "pdf", "fmt": "png"}


def test_every_protected_operation_answers_401_in_the_error_shape(client):
    for path, method in sorted(spec_routes(SPEC)):
        operation = SPEC["paths"][path][method.lower()]
        if operation.get("security") == []:
            continue
        url = re.sub(r"\{(\w+)\}", lambda m: SAMPLE_PARAMS.get(m.group(1), "1"), path)
        assert_error(client.open(url, method=method), 401)


def check_error_shape(ctx, response, case):
    """Every 4xx/5xx body is {"error": {"status", "code", "message", "field"}}."""
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"error"}, body
        extra = {"job_status"} if body["error"].get("code") == "job_not_finished" else set()
        assert set(body["error"]) == {"status", "code", "message", "field"} | extra, body
        assert body["error"]["status"] == response.status_code, body
        assert body["error"]["message"], body


# Bounded: about 20 operations x 2 modes x 2 identities x 25 examples, about a minute.
EXAMPLES = 25
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]


def fuzz(operations, headers, mode):
    """Run every operation's generated cases; any 5xx, undocumented status, body that
    breaks its schema or error outside the one shape fails the test."""
    for operation in operations:
        @given(case=operation.as_strategy(generation_mode=mode))
        @hypothesis_settings(max_examples=EXAMPLES, deadline=None, database=None,
                             suppress_health_check=list(HealthCheck), derandomize=True)
        def run(case):
            response = case.call(headers=headers)
            case.validate_response(response, checks=CHECKS,
                                   additional_checks=[check_error_shape])

        run()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize("identity", ["admin", "user"])
def test_the_api_fuzzed_from_its_document(app, templates, make_user, mode, identity):
    """Everything as an admin; the admin API as a plain user too (its 403s)."""
    _, headers = make_user("root", admin=identity == "admin")
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    # schemathesis leaves out the document it was loaded from.
    assert {(o.path, o.method.upper()) for o in operations} == \
        spec_routes(SPEC) - {("/api/openapi.json", "GET")}
    if identity == "user":
        operations = [o for o in operations if o.path.startswith("/api/admin/")]
    fuzz(operations, headers, mode)


# -- the dashboard's JSON endpoints, fuzzed with a logged-in session ----------------------

ERROR_RESPONSE = {"description": "An error.",
                  "content": {"application/json": {"schema": ERROR_REF}}}
PROGRESS = {"type": "object", "additionalProperties": False, "required": ["jobs"],
            "properties": {"jobs": {"type": "object", "additionalProperties": {
                "type": "object", "additionalProperties": False,
                "required": ["status", "progress", "stage"],
                "properties": {"status": {"type": "string"},
                               "progress": {"type": "integer", "minimum": 0, "maximum": 100},
                               "stage": {"type": "string"}}}}}}
LIVE_PART = {"type": "object", "additionalProperties": False, "required": ["now", "html"],
             "properties": {"now": {"type": "number"}, "html": {"type": "string"}}}
LIVE_ROWS = {"type": "object", "additionalProperties": False,
             "required": ["now", "since", "new", "changed", "gone"],
             "properties": {"now": {"type": "number"}, "since": {"type": "number"},
                            "new": {"type": "string"}, "changed": {"type": "string"},
                            "gone": {"type": "array", "items": {"type": "string"}}}}
LIST_ARGS = [{"name": name, "in": "query", "schema": {"type": "string"}}
             for name in ("q", "type", "status", "owner", "worker", "from", "to", "date",
                          "sort", "order", "cursor", "since", "ids")]


def live_part(description, schema, parameters=()):
    return {"get": {"parameters": list(parameters), "responses": {
        "200": {"description": description, "content": {"application/json": {
            "schema": schema}}},
        "401": ERROR_RESPONSE, "422": ERROR_RESPONSE}}}


DASHBOARD_DOC = {
    "openapi": "3.1.0",
    "info": {"title": "qrq dashboard JSON (session cookie)", "version": "0"},
    "paths": {
        "/admin/progress.json": {"get": {
            "parameters": [{"name": "ids", "in": "query", "schema": {"type": "string"}}],
            "responses": {"200": {"description": "Progress of the listed jobs.",
                                  "content": {"application/json": {"schema": PROGRESS}}},
                          "401": ERROR_RESPONSE, "422": ERROR_RESPONSE}}},
        "/admin/overview.json": live_part("The overview, rendered again.", LIVE_PART),
        "/admin/consumers.json": live_part("The consumers, rendered again.", LIVE_PART),
        "/admin/alerts.json": live_part("The alert banners, rendered again.", LIVE_PART),
        "/admin/jobs.json": live_part("New and changed rows of the job list.", LIVE_ROWS,
                                      LIST_ARGS),
        # The analytics chart on the dashboard: the API's answers, on the session.
        "/admin/analytics/time-based.json": SPEC["paths"]["/api/analytics/time-based"],
        "/admin/analytics/jobs/{job_id}.json": {
            "get": SPEC["paths"]["/api/analytics/jobs/{job_id}"]["get"]},
    },
    "components": {"schemas": SPEC["components"]["schemas"],
                   "responses": SPEC["components"]["responses"]},
}


def csrf_of(html):
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def dashboard_json_routes(app):
    """Every (path, METHOD) of the dashboard that answers JSON (its paths end in .json)."""
    found = set()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/admin/") and rule.rule.endswith(".json"):
            path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
            found |= {(path, method) for method in rule.methods & METHODS}
    return found


def test_every_dashboard_json_endpoint_is_fuzzed(app):
    assert dashboard_json_routes(app) == spec_routes(DASHBOARD_DOC)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_the_dashboards_json_endpoints_fuzzed(app, client, make_user, mode):
    _, headers = make_user("root", admin=True)
    form = {"name": "root", "token": headers["Authorization"].split(" ", 1)[1],
            "csrf_token": csrf_of(client.get("/admin/login").text)}
    assert client.post("/admin/login", data=form).status_code == 302  # as test_admin does
    cookie = client.get_cookie(app.config["SESSION_COOKIE_NAME"], path="/admin")
    session = {"Cookie": f"{cookie.key}={cookie.value}",
               "X-CSRF-Token": csrf_of(client.get("/admin/").text)}
    schema = schemathesis.openapi.from_dict(DASHBOARD_DOC)
    schema.app = app
    operations = [result.ok() for result in schema.get_all_operations()]
    # An operation without parameters has no wrong input to make.
    operations = [op for op in operations if mode == GenerationMode.POSITIVE
                  or DASHBOARD_DOC["paths"][op.path]["get"]["parameters"]]
    fuzz(operations, session, mode)
    # Without the session every one of them is a 401 in the error shape.
    for path, method in spec_routes(DASHBOARD_DOC):
        assert_error(app.test_client().open(path, method=method), 401)


# -- responses of real resources match the document -------------------------------------

def run_queue():
    """Run every queued task in this process, through real storage."""
    for _ in range(100):
        task = huey.dequeue()
        if task is None:
            return
        huey.execute(task)
    raise AssertionError("the queue did not drain")


def test_real_responses_match_the_document(app, client, templates, make_user):
    """A finished PDF job, a batch (done and queued), a template: every GET the document
    lists, called with their ids, answers a documented status with a conforming body."""
    _, admin = make_user("root", admin=True)
    pdf = client.post("/api/generate-qr-pdf", json={"template_id": 1}, headers=admin)
    done = client.post("/api/batch/generate-qrs", json={"template_ids": [1, 2]},
                       headers=admin)
    run_queue()
    queued = client.post("/api/batch/generate-qrs", json={"items": [{"template_id": 1}]},
                         headers=admin)
    job_ids = [pdf.get_json()["job_id"], done.get_json()["batch_job_id"],
               queued.get_json()["batch_job_id"]]
    samples = {"job_id": job_ids, "template_id": [1], "kind": ["pdf", "zip"],
               "fmt": ["svg", "png"], "idx": [0]}
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", app)
    checked = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.method.upper() != "GET" or "/download" in operation.path:
            continue  # downloads are files, checked in test_api
        names = re.findall(r"\{(\w+)\}", operation.path)
        for values in itertools.product(*(samples[name] for name in names)):
            case = operation.Case(path_parameters=dict(zip(names, values, strict=True)))
            response = case.call(headers=admin)
            case.validate_response(response, checks=CHECKS,
                                   additional_checks=[check_error_shape])
            checked += response.status_code == 200
    assert checked >= 15


# -- stated once: option limits, 405s -----------------------------------------------------

def options_in(document):
    operation = document["paths"]["/api/generate-qr-pdf"]["post"]
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    return body["properties"]["options"]


def test_option_limits_come_from_the_validators_field_table(monkeypatch):
    from qrq.cards import options
    from qrq.web.openapi import build_document

    assert options_in(SPEC) == options.json_schema()
    assert set(options_in(SPEC)["properties"]) == {*options.FIELDS, *options.OPTION_ONLY}
    assert options_in(SPEC)["properties"]["size_mm"]["maximum"] == 500
    size = options.FIELDS["size_mm"]
    monkeypatch.setitem(options.FIELDS, "size_mm",
                        options.Field(size.name, size.help, options._number(5, 321)))
    monkeypatch.setattr(options, "MAX_TEXT", 17)
    monkeypatch.setitem(options.FIELDS, "title", options.Field(
        "title", "Title.", options._text(options.MAX_TEXT)))
    document = build_document()
    assert options_in(document)["properties"]["size_mm"]["maximum"] == 321
    assert options_in(document)["properties"]["title"]["maxLength"] == 17
    item = document["paths"]["/api/batch/generate-qrs"]["post"]["requestBody"]["content"][
        "application/json"]["schema"]["properties"]["items"]["items"]
    assert item["properties"]["title"]["maxLength"] == 17
    # ... and the validator enforces what the document says.
    with pytest.raises(ValidationError):
        options.check_options({"size_mm": 322}, 1)


def test_the_documents_limits_are_the_validators(templates, client, alice):
    """Just past each numeric or length limit the document states, the API says 422."""
    properties = options_in(SPEC)["properties"]
    too_far = {name: prop["maximum"] + 1 for name, prop in properties.items()
               if "maximum" in prop}
    too_far |= {name: "x" * (prop["maxLength"] + 1) for name, prop in properties.items()
                if "maxLength" in prop}
    assert {"size_mm", "quiet_zone", "title", "data"} <= set(too_far)
    for name, value in too_far.items():
        response = client.post("/api/generate-qr-pdf", headers=alice[1],
                               json={"template_id": 1, "options": {name: value}})
        assert_error(response, 422, f"options.{name}")


def test_both_job_posts_document_the_idempotency_key():
    for path in ("/api/generate-qr-pdf", "/api/batch/generate-qrs"):
        operation = SPEC["paths"][path]["post"]
        assert "Idempotency-Key" in [p["name"] for p in operation["parameters"]
                                     if p["in"] == "header"]
        assert "Idempotent-Replayed" in operation["responses"]["202"]["headers"]


def test_an_undocumented_method_is_405_with_allow_listing_the_documented_ones(client, alice):
    patterns = {path: re.compile(re.sub(r"\{\w+\}", "[^/]+", path)) for path in SPEC["paths"]}
    for path in SPEC["paths"]:
        url = re.sub(r"\{(\w+)\}", lambda m: SAMPLE_PARAMS.get(m.group(1), "1"), path)
        # A URL may match more than one documented path (/api/batch/{job_id} and
        # /api/batch/generate-qrs): Allow lists the methods of all of them.
        documented = {method.upper() for other, pattern in patterns.items()
                      if pattern.fullmatch(url) for method in SPEC["paths"][other]}
        for method in sorted(METHODS - documented):
            response = client.open(url, method=method, headers=alice[1])
            assert_error(response, 405)
            allowed = set(response.headers["Allow"].split(", ")) - {"HEAD", "OPTIONS"}
            assert allowed == documented, (path, method, response.headers["Allow"])
