"""The OpenAPI document at /api/openapi.json: true to the app's routes, and the API
fuzzed from it (schemathesis through the WSGI interface): no 5xx, every response as
documented, every error in the one error shape."""

import re
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

from qrq.web.openapi import SPEC
from tests.test_api import assert_error

# Hypothesis keeps caches in ./.hypothesis; keep the checkout clean.
set_hypothesis_home_dir(tempfile.mkdtemp(prefix="qrq-hypothesis-"))

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
        assert set(body["error"]) == {"status", "code", "message", "field"}, body
        assert body["error"]["status"] == response.status_code, body
        assert body["error"]["message"], body


# Bounded: about 15 operations x 2 modes x 25 examples, well under a minute.
EXAMPLES = 25


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_the_api_fuzzed_from_its_document(app, templates, make_user, mode):
    _, admin = make_user("root", admin=True)
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", app)
    checks = [not_a_server_error, status_code_conformance, response_schema_conformance]
    operations = [result.ok() for result in schema.get_all_operations()]
    # schemathesis leaves out the document it was loaded from.
    assert {(o.path, o.method.upper()) for o in operations} == \
        spec_routes(SPEC) - {("/api/openapi.json", "GET")}
    for operation in operations:
        @given(case=operation.as_strategy(generation_mode=mode))
        @hypothesis_settings(max_examples=EXAMPLES, deadline=None, database=None,
                             suppress_health_check=list(HealthCheck), derandomize=True)
        def fuzz(case):
            response = case.call(headers=admin)
            case.validate_response(response, checks=checks,
                                   additional_checks=[check_error_shape])

        fuzz()
