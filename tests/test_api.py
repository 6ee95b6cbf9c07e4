import errno
import json
import os
import uuid

import pytest

from qrq.queue import huey, jobs

PDF = "/api/generate-qr-pdf"


def job_count():
    return huey.storage.sql("select count(*) from job", results=True)[0][0]


def assert_error(response, status, field=None):
    assert response.status_code == status, response.data
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"status", "code", "message", "field"}
    assert body["error"]["status"] == status
    assert body["error"]["message"]
    if field is not None:
        assert body["error"]["field"] == field
    return body["error"]


def test_post_answers_202_with_a_job_id_at_once(client, templates, alice):
    response = client.post(PDF, json={"template_id": 2, "options": {"copies": 4}},
                           headers=alice[1])
    assert response.status_code == 202
    body = response.get_json()
    assert set(body) == {"job_id", "status", "status_url", "estimated_completion"}
    assert body["status"] == "queued"
    assert body["status_url"] == f"/api/job-status/{body['job_id']}"
    assert response.headers["Location"] == body["status_url"]
    # Nothing ran in the request: the task waits in the queue with its record.
    assert huey.storage.queue_size() == 1
    status = client.get(body["status_url"], headers=alice[1]).get_json()
    assert status["status"] == "queued" and status["progress"] == 0
    assert {"job_id", "type", "status", "progress", "stage", "created_at", "started_at",
            "finished_at", "result", "error"} <= set(status)
    assert status["type"] == "pdf" and status["started_at"] is None


def test_status_after_the_job_ran_through_real_storage(client, templates, alice):
    job_id = client.post(PDF, json={"template_id": 1}, headers=alice[1]).get_json()["job_id"]
    task = huey.dequeue()  # from SQLite, unpickled and signature-checked
    assert task.id == job_id
    assert client.get(f"/api/job-status/{job_id}", headers=alice[1]).get_json()[
        "status"] == "running"
    huey.execute(task)
    status = client.get(f"/api/job-status/{job_id}", headers=alice[1]).get_json()
    assert status["status"] == "finished" and status["progress"] == 100
    assert status["result"]["pages"] == 1
    # Reading twice returns the same result: a status read never consumes it.
    again = client.get(f"/api/job-status/{job_id}", headers=alice[1]).get_json()
    assert again["result"] == status["result"]
    with client.get(status["result"]["download_url"], headers=alice[1]) as download:
        assert download.status_code == 200
        assert download.mimetype == "application/pdf"
        assert download.data.startswith(b"%PDF")


@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": "Bearer nope"},
    {"Authorization": "Basic YWxpY2U6cHc="},
    {"Authorization": "Bearer"},
])
def test_missing_or_bad_token_is_401(client, templates, headers):
    assert_error(client.post(PDF, json={"template_id": 1}, headers=headers), 401)
    assert_error(client.get("/api/templates", headers=headers), 401)
    assert job_count() == 0


def test_another_users_job_and_file_are_404_and_admins_see_all(client, templates, alice,
                                                                make_user):
    _, bob = make_user("bob")
    _, admin = make_user("root", admin=True)
    job_id = client.post(PDF, json={"template_id": 1}, headers=alice[1]).get_json()["job_id"]
    huey.execute(huey.dequeue())
    for url in (f"/api/job-status/{job_id}", f"/api/jobs/{job_id}",
                f"/api/jobs/{job_id}/download"):
        assert_error(client.get(url, headers=bob), 404)
        for headers in (alice[1], admin):
            with client.get(url, headers=headers) as response:
                assert response.status_code == 200
    assert_error(client.delete(f"/api/jobs/{job_id}", headers=bob), 404)
    assert client.get("/api/jobs", headers=bob).get_json()["jobs"] == []
    assert [j["job_id"] for j in client.get("/api/jobs", headers=admin).get_json()[
        "jobs"]] == [job_id]
    admin_view = client.get(f"/api/job-status/{job_id}", headers=admin).get_json()
    owner_view = client.get(f"/api/job-status/{job_id}", headers=alice[1]).get_json()
    assert "traceback" in admin_view and "traceback" not in owner_view


def test_unknown_job_is_404_not_queued(client, alice):
    assert_error(client.get("/api/job-status/00000000-0000-4000-8000-000000000000",
                            headers=alice[1]), 404)
    assert_error(client.get("/api/job-status/../../etc/passwd", headers=alice[1]), 404)
    assert_error(client.get("/api/jobs/not-a-uuid/download", headers=alice[1]), 404)
    assert_error(client.get("/api/jobs//download", headers=alice[1]), 404)


def test_an_error_echoes_at_most_300_characters_of_input_and_no_answer_is_sniffed(
        client, alice):
    answer = client.get("/api/jobs/" + "a" * 200_000, headers=alice[1])
    assert_error(answer, 404)
    message = answer.get_json()["error"]["message"]
    assert len(message) == 300 and message.startswith("job aaa") and message.endswith("…")
    assert len(answer.data) < 1000
    for each in (answer, client.get("/api/me", headers=alice[1]), client.get("/healthz")):
        assert each.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("kwargs, status, field", [
    ({"data": b"{not json", "content_type": "application/json"}, 400, None),
    ({"data": b"template_id=1", "content_type": "application/x-www-form-urlencoded"}, 400,
     None),
    ({"json": [1, 2]}, 400, None),
    ({"json": {}}, 422, "template_id"),
    ({"json": {"template_id": "1"}}, 422, "template_id"),
    ({"json": {"template_id": 1.5}}, 422, "template_id"),
    ({"json": {"template_id": 999}}, 422, "template_id"),
    ({"json": {"template_id": 1, "extra": 1}}, 422, "extra"),
    ({"json": {"template_id": 1, "options": "copies=3"}}, 422, "options"),
    ({"json": {"template_id": 1, "options": []}}, 422, "options"),
    ({"json": {"template_id": 1, "options": ""}}, 422, "options"),
    ({"json": {"template_id": 1, "options": False}}, 422, "options"),
    ({"json": {"template_id": 1, "options": {"copies": 0}}}, 422, "options.copies"),
    ({"json": {"template_id": 1, "options": {"copies": 10**6}}}, 422, "options.copies"),
    ({"json": {"template_id": 1, "options": {"size_mm": 0}}}, 422, "options.size_mm"),
    ({"json": {"template_id": 1, "options": {"data": "x" * 4000}}}, 422, "options.data"),
    ({"json": {"template_id": 1, "options": {"bogus": 1}}}, 422, "options.bogus"),
    ({"json": {"template_id": 1, "options": {"error_correction": ["H"]}}}, 422,
     "options.error_correction"),
    ({"json": {"template_id": 1, "options": {"error_correction": {}}}}, 422,
     "options.error_correction"),
    ({"json": {"template_id": 1, "options": {"data": "{copy:>10}"}}}, 422, "options.data"),
    ({"json": {"template_id": 1, "options": {"data": "{nope}"}}}, 422, "options.data"),
    # {job_id} is checked at a job id's length, not as "" (the job does not exist yet).
    ({"json": {"template_id": 1, "options": {"data": "{job_id}" * 60,
                                             "error_correction": "H"}}}, 422, "options.data"),
])
def test_bad_input_is_a_json_error_and_enqueues_nothing(client, templates, alice, kwargs,
                                                        status, field):
    assert_error(client.post(PDF, headers=alice[1], **kwargs), status, field)
    assert job_count() == 0 and huey.storage.queue_size() == 0


def test_oversized_body_is_413(client, templates, alice, settings):
    body = json.dumps({"template_id": 1, "options": {"title": "x" * settings.max_request_bytes}})
    response = client.post(PDF, data=body, content_type="application/json", headers=alice[1])
    assert_error(response, 413)
    assert job_count() == 0


def test_routing_errors_use_the_same_shape(client, alice):
    assert_error(client.get("/api/nope", headers=alice[1]), 404)
    response = client.put(PDF, headers=alice[1])
    assert_error(response, 405)
    assert set(response.headers["Allow"].split(", ")) == {"POST", "OPTIONS"}  # RFC 9110


def test_templates_list_and_show(client, templates, alice):
    listed = client.get("/api/templates", headers=alice[1]).get_json()["templates"]
    assert [t["id"] for t in listed] == [1, 2, 3, 4]
    assert {"id", "name", "payload", "page_size", "grid", "colors"} <= set(listed[0])
    assert client.get("/api/templates/2", headers=alice[1]).get_json()["grid"] == "2x4"
    assert_error(client.get("/api/templates/99", headers=alice[1]), 404)


def test_cancel_a_queued_job(client, templates, alice):
    job_id = client.post(PDF, json={"template_id": 1}, headers=alice[1]).get_json()["job_id"]
    response = client.delete(f"/api/jobs/{job_id}", headers=alice[1])
    assert response.status_code == 202 and response.get_json()["status"] == "canceled"
    assert huey.storage.queue_size() == 0
    assert_error(client.delete(f"/api/jobs/{job_id}", headers=alice[1]), 409)
    assert jobs.get(huey.storage, job_id)["status"] == "canceled"


def test_template_deleted_before_the_run_fails_visibly(client, templates, alice):
    from qrq.appdb.db import app_db
    from qrq.appdb.models import Template

    job_id = client.post(PDF, json={"template_id": 3}, headers=alice[1]).get_json()["job_id"]
    with app_db.connection_context():
        Template.delete_by_id(3)
    huey.execute(huey.dequeue())
    status = client.get(f"/api/job-status/{job_id}", headers=alice[1]).get_json()
    assert status["status"] == "failed"
    assert status["error"] == "template 3 does not exist"
    assert status["attempts"] == 1  # bad input: never retried
    assert huey.storage.queue_size() == 0 and huey.scheduled_count() == 0


def test_a_user_with_too_many_unfinished_jobs_gets_429(settings, templates, alice, make_user):
    import dataclasses

    from qrq.web import create_app

    limited = dataclasses.replace(settings, max_active_jobs=2)
    client = create_app({"SETTINGS": limited, "TESTING": True}).test_client()
    body = {"template_id": 1}
    ids = [client.post(PDF, json=body, headers=alice[1]).get_json()["job_id"] for _ in range(2)]
    refused = client.post(PDF, json=body, headers=alice[1])
    error = assert_error(refused, 429)
    assert error["code"] == "too_many_jobs"
    assert refused.headers["Retry-After"] == "5"  # the client's wait backs off by it
    assert_error(client.post("/api/batch/generate-qrs", json={"template_ids": [1]},
                             headers=alice[1]), 429)
    assert job_count() == 2  # nothing enqueued by the refused calls
    # Other users are not affected, admins are exempt.
    _, bob = make_user("bob")
    assert client.post(PDF, json=body, headers=bob).status_code == 202
    _, root = make_user("root", admin=True)
    assert all(client.post(PDF, json=body, headers=root).status_code == 202 for _ in range(3))
    # Once one of alice's jobs has ended she may queue another.
    assert client.delete(f"/api/jobs/{ids[0]}", headers=alice[1]).status_code == 202
    assert client.post(PDF, json=body, headers=alice[1]).status_code == 202


# -- client input never reaches a 5xx (issue 12, point 1) ------------------------------

BATCH = "/api/batch/generate-qrs"
DEEP = "[" * 1000 + "]" * 1000


@pytest.mark.parametrize("url, body", [
    (PDF, '{"template_id": 1, "options": {"data": ' + DEEP + "}}"),
    (PDF, DEEP),
    (BATCH, '{"template_ids": [1], "options": ' + DEEP + "}"),
    ("/api/admin/jobs/retry-failed", '{"type": ' + DEEP + "}"),
    ("/api/admin/jobs/purge", DEEP),
    (PDF, '{"template_id": NaN}'),
    (PDF, '{"template_id": Infinity}'),
    (PDF, '{"template_id": 1' + "0" * 5000 + "}"),
    (BATCH, '{"template_ids": [-Infinity]}'),
])
def test_deep_or_non_standard_json_is_a_400(client, templates, make_user, url, body):
    _, admin = make_user("root", admin=True)
    assert_error(client.post(url, data=body, content_type="application/json",
                             headers=admin), 400)
    assert job_count() == 0


def test_nesting_up_to_the_limit_is_still_read(client, templates, alice):
    from qrq.web.params import MAX_DEPTH

    inner = "[" * (MAX_DEPTH - 2) + '"x"' + "]" * (MAX_DEPTH - 2)
    # Brackets inside strings do not count as nesting.
    body = '{"template_id": 1, "options": {"lines": ' + inner + ', "title": "[[{{"}}'
    assert_error(client.post(PDF, data=body, content_type="application/json",
                             headers=alice[1]), 422, "options.lines[0]")  # read, then checked
    deeper = body.replace('"x"', '["x"]')
    assert_error(client.post(PDF, data=deeper, content_type="application/json",
                             headers=alice[1]), 400)
    title = "[" * 100 + "{" * 100  # brackets in strings are text
    response = client.post(PDF, json={"template_id": 1, "options": {"title": title}},
                           headers=alice[1])
    assert response.status_code == 202


def test_many_shallow_brackets_are_not_called_deep(client, templates, alice):
    """Depth is the running count of open brackets: many side by side, or a stray
    closing one, are not nesting (they were, when pairs were removed a level a pass)."""
    from qrq.web.params import MAX_DEPTH, nests_within

    shallow = "[" + "[]," * 40 + "[]]"
    assert nests_within(shallow) and nests_within("[" + "[]]" * 40)
    assert nests_within('["' + "[" * 40 + '", "\\"[[["]' + "]" * 40)
    assert not nests_within("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1))
    assert not nests_within("[" * 40 + '"unclosed \\" [' + "]" * 40)
    error = assert_error(client.post(PDF, data=shallow[:-1] + "]]",
                                     content_type="application/json", headers=alice[1]), 400)
    assert error["message"] == "the body is not valid JSON"


SURROGATE, TWICE = "holds a lone UTF-16 surrogate, which is not text", "given more than once"


@pytest.mark.parametrize("url, body, field, message", [
    (PDF, '{"template_id": 1, "options": {"data": "a\\ud800b"}}', "options.data", SURROGATE),
    (PDF, '{"template_id": 1, "options": {"title": "\\udc00"}}', "options.title", SURROGATE),
    (PDF, '{"template_id": 1, "\\ud800": 1}', "\\ud800", SURROGATE),
    (BATCH, '{"items": [{"template_id": 1, "data": "ok"}, {"template_id": 1, '
            '"data": "\\uDBFF"}]}', "items[1].data", SURROGATE),
    (BATCH, '{"items": [{"template_id": 1, "title": "\\ud800x"}]}', "items[0].title",
     SURROGATE),
    ("/api/admin/jobs/retry-failed", '{"type": "\\ud800"}', "type", SURROGATE),
    (PDF, '{"template_id": 1, "template_id": 2}', "template_id", TWICE),
    (PDF, '{"template_id": 1, "options": {"copies": 1, "title": "A", "copies": 900}}',
     "options.copies", TWICE),
    (PDF, '{"template_id": 1, "options": {"colors": {"fg": "#000000", "fg": "#ffffff"}}}',
     "options.colors.fg", TWICE),
    (BATCH, '{"items": [{"template_id": 1, "data": "ok"}, {"template_id": 1, '
            '"data": "a", "data": "b"}]}', "items[1].data", TWICE),
    (BATCH, '{"template_ids": [1], "options": {}, "options": {"copies": 2}}', "options", TWICE),
    ("/api/admin/jobs/retry-failed", '{"type": "pdf", "type": "batch"}', "type", TWICE),
])
def test_a_lone_surrogate_or_a_key_given_twice_anywhere_is_a_422_naming_it(
        client, templates, make_user, url, body, field, message):
    _, admin = make_user("root", admin=True)
    error = assert_error(client.post(url, data=body, content_type="application/json",
                                     headers=admin), 422, field)
    assert (error["code"], error["message"]) == ("validation_error", message)
    assert job_count() == 0


def test_a_surrogate_pair_is_text(client, templates, alice):
    # In data: a title must also be printable in the PDF fonts, which 😀 is not.
    body = '{"template_id": 1, "options": {"data": "\\ud83d\\ude00 \\\\ud800"}}'
    response = client.post(PDF, data=body, content_type="application/json", headers=alice[1])
    assert response.status_code == 202
    status = client.get(response.get_json()["status_url"], headers=alice[1]).get_json()
    assert status["params"]["options"]["data"] == "\U0001f600 \\ud800"


@pytest.mark.parametrize("url", [
    "/api/templates/9223372036854775808",
    "/api/templates/99999999999999999999",
    "/api/templates/1" + "0" * 5000,
    "/api/templates/%D9%A3",  # an Arabic-Indic 3: a digit to str.isdigit, not to us
    "/api/templates/%C2%B2",
])
def test_an_id_out_of_range_or_not_ascii_is_404(client, templates, alice, url):
    assert_error(client.get(url, headers=alice[1]), 404)


def test_the_largest_sqlite_id_is_an_ordinary_404(client, templates, alice):
    assert_error(client.get("/api/templates/9223372036854775807", headers=alice[1]), 404)
    assert client.get("/api/templates/0001", headers=alice[1]).get_json()["id"] == 1


def test_every_int_route_uses_the_bounded_converter(app):
    from werkzeug.routing import IntegerConverter

    from qrq.web.params import RowId

    int_parts = [(rule.rule, converter) for rule in app.url_map.iter_rules()
                 for converter in rule._converters.values()
                 if isinstance(converter, IntegerConverter)]
    assert {rule for rule, _ in int_parts} >= {"/api/templates/<int:template_id>"}
    assert all(isinstance(converter, RowId) for _, converter in int_parts), int_parts


@pytest.mark.parametrize("query", ["limit=%C2%B2", "limit=%D9%A3", "offset=1" + "0" * 5000,
                                   "limit=-1", "limit=+5", "limit=%201", "limit=0x10",
                                   "limit=", "offset=9223372036854775808"])
def test_a_bad_integer_query_parameter_is_a_422(client, alice, query):
    name = query.split("=")[0]
    assert_error(client.get(f"/api/jobs?{query}", headers=alice[1]), 422, name)


def test_batch_item_pages_parse_integers_the_same_way(client, templates, alice):
    job_id = client.post(BATCH, json={"template_ids": [1]}, headers=alice[1]).get_json()[
        "batch_job_id"]
    for query in ("page=%C2%B2", "per_page=1" + "0" * 5000):
        assert_error(client.get(f"/api/batch/{job_id}/items?{query}", headers=alice[1]), 422,
                     query.split("=")[0])
    assert_error(client.get(f"/api/batch/{job_id}/items/9223372036854775808/svg",
                            headers=alice[1]), 404)


# -- a full disk is a 503 storage_full (issue 12, point 9) ----------------------------

def fill(directory):
    """Write zeros under *directory* until the file system refuses (ENOSPC)."""
    chunk = b"\0" * 65536
    with open(directory / "filler", "wb", buffering=0) as out:
        try:
            while True:
                out.write(chunk)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
        while True:  # the last few bytes too
            try:
                out.write(b"\0" * 512)
            except OSError:
                break


def test_a_full_disk_is_a_503_storage_full_and_passes(small_disk, monkeypatch):
    from qrq.appdb.db import app_db, init_db
    from qrq.config import load_settings
    from qrq.demo import create_templates
    from qrq.web import create_app

    monkeypatch.setenv("QRQ_DATA_DIR", str(small_disk / "data"))
    settings = load_settings()
    settings.ensure_dirs()
    huey.init(settings)
    init_db(settings.app_db, settings.busy_timeout)
    try:
        from qrq.appdb.models import User

        with app_db.connection_context():
            create_templates()
            _, token = User.create_with_token("root", admin=True)
        headers = {"Authorization": f"Bearer {token}"}
        client = create_app({"SETTINGS": settings, "TESTING": True}).test_client()
        assert client.post(PDF, json={"template_id": 1}, headers=headers).status_code == 202
        fill(small_disk)
        answers = []
        for _ in range(200):  # SQLite reuses its free pages first; new ones need space
            response = client.post(PDF, json={"template_id": 1}, headers=headers)
            answers.append(response.status_code)
            if response.status_code == 503:
                break
        assert set(answers) <= {202, 503} and answers[-1] == 503, answers
        error = assert_error(response, 503)
        assert error["code"] == "storage_full"
        assert response.headers["Retry-After"]
        # Reads still work, and when space returns, so do writes.
        assert client.get("/api/jobs", headers=headers).status_code == 200
        (small_disk / "filler").unlink()
        assert client.post(PDF, json={"template_id": 1}, headers=headers).status_code == 202
    finally:
        huey.storage.close()
        app_db.close()


# -- downloads send only the file the job wrote (issue 12, point 6) -------------------

def finished_pdf(client, headers):
    job_id = client.post(PDF, json={"template_id": 1}, headers=headers).get_json()["job_id"]
    huey.execute(huey.dequeue())
    return job_id, f"/api/jobs/{job_id}/download"


def finished_batch(client, headers):
    job_id = client.post("/api/batch/generate-qrs", json={"template_ids": [1, 2]},
                         headers=headers).get_json()["batch_job_id"]
    while (task := huey.dequeue()) is not None:
        huey.execute(task)
    return job_id


def test_a_download_sends_the_recorded_file_with_ranges(client, templates, alice, settings):
    job_id, url = finished_pdf(client, alice[1])
    path = settings.artifacts_dir / f"{job_id}.pdf"
    with client.get(url, headers=alice[1]) as response:
        assert response.status_code == 200 and response.data == path.read_bytes()
        assert response.content_length == path.stat().st_size
        etag = response.headers["ETag"]
    with client.get(url, headers={**alice[1], "Range": "bytes=0-3"}) as response:
        assert response.status_code == 206 and response.data == b"%PDF"
    with client.get(url, headers={**alice[1], "If-None-Match": etag}) as response:
        assert response.status_code == 304


def replace_with_symlink(path, target):
    path.unlink()
    path.symlink_to(target)


def append_a_byte(path, target):
    with open(path, "ab") as out:
        out.write(b"\n")


def truncate(path, target):
    os.truncate(path, 100)


def replace_with_fifo(path, target):
    path.unlink()
    os.mkfifo(path)


def replace_with_directory(path, target):
    path.unlink()
    path.mkdir()


@pytest.mark.parametrize("tamper", [replace_with_symlink, append_a_byte, truncate,
                                    replace_with_fifo, replace_with_directory])
def test_every_download_refuses_a_symlink_or_a_file_unlike_the_record(
        client, templates, alice, settings, tmp_path, tamper):
    secret = tmp_path / "secret.pdf"
    secret.write_bytes(b"%PDF not yours")
    job_id, url = finished_pdf(client, alice[1])
    batch_id = finished_batch(client, alice[1])
    downloads = {settings.artifacts_dir / f"{job_id}.pdf": url,
                 settings.artifacts_dir / f"{batch_id}.pdf": f"/api/batch/{batch_id}/download/pdf",
                 settings.artifacts_dir / f"{batch_id}.zip": f"/api/batch/{batch_id}/download/zip"}
    for path, download in downloads.items():
        with client.get(download, headers=alice[1]) as response:
            assert response.status_code == 200  # as written
        tamper(path, secret)
        error = assert_error(client.get(download, headers=alice[1]), 404)
        assert str(tmp_path) not in error["message"]


# -- one error shape for every status a client can meet ------------------------------

def full_queue_database():
    """Cap the queue database at its current size: the next page it needs is SQLITE_FULL
    ("database or disk is full"), as on a full disk, at the SQLite layer."""
    pages = huey.storage.sql("pragma page_count", results=True)[0][0]
    huey.storage.sql(f"pragma max_page_count = {pages}")


def test_every_error_status_has_the_one_shape(settings, templates, make_user, backend):
    import dataclasses

    from qrq.web import create_app

    app = create_app({"SETTINGS": dataclasses.replace(settings, max_active_jobs=1),
                      "TESTING": True})
    client = app.test_client()
    _, user = make_user("alice")
    _, admin = make_user("root", admin=True)
    job_id = client.post(PDF, json={"template_id": 1}, headers=user).get_json()["job_id"]
    client.delete(f"/api/jobs/{job_id}", headers=user)
    client.post(PDF, json={"template_id": 1}, headers=user)  # alice's one active job
    too_big = "x" * settings.max_request_bytes

    def storage_full():
        full_queue_database()
        for _ in range(500):
            response = client.post(PDF, json={"template_id": 1, "options": {
                "title": "t" * 200}}, headers=admin)
            if response.status_code != 202:
                return response
        raise AssertionError("the queue database never filled up")

    answers = {
        400: lambda: client.post(PDF, data="{", content_type="application/json",
                                 headers=user),
        401: lambda: client.get("/api/jobs"),
        403: lambda: client.get("/api/admin/queue-status", headers=user),
        404: lambda: client.get("/api/jobs/" + "0" * 36, headers=user),
        405: lambda: client.put(PDF, headers=user),
        409: lambda: client.delete(f"/api/jobs/{job_id}", headers=user),
        413: lambda: client.post(PDF, json={"template_id": 1, "options": {"title": too_big}},
                                 headers=user),
        422: lambda: client.post(PDF, json={"template_id": "one"}, headers=admin),
        429: lambda: client.post(PDF, json={"template_id": 1}, headers=user),
        503: storage_full,
    }
    if backend == "postgres":  # SQLite's page cap stands in for a full disk; the 503 of
        del answers[503]       # PostgreSQL being down: tests/test_postgres_errors.py
    codes = {}
    for status, call in answers.items():
        codes[status] = assert_error(call(), status)["code"]
    assert codes.get(503, "storage_full") == "storage_full" and codes[429] == "too_many_jobs"
    assert codes[405] == "method_not_allowed" and codes[413] == "payload_too_large"


def test_downloading_an_unfinished_or_failed_job_is_409_with_its_status(client, templates,
                                                                         alice, make_user):
    _, bob = make_user("bob")
    job_id = client.post(PDF, json={"template_id": 1}, headers=alice[1]).get_json()["job_id"]
    url = f"/api/jobs/{job_id}/download"
    response = client.get(url, headers=alice[1])
    assert response.status_code == 409
    error = response.get_json()["error"]
    assert error["code"] == "job_not_finished" and error["job_status"] == "queued"
    assert_error(client.get(url, headers=bob), 404)  # not yours: as absent as a missing one
    assert_error(client.get(f"/api/jobs/{uuid.uuid4()}/download", headers=alice[1]), 404)
    client.delete(f"/api/jobs/{job_id}", headers=alice[1])
    canceled = client.get(url, headers=alice[1]).get_json()["error"]
    assert canceled["job_status"] == "canceled"
    assert canceled["message"] == f"job {job_id} is canceled; it has no output"
    batch_id = client.post("/api/batch/generate-qrs", headers=alice[1], json={
        "items": [{"template_id": 1, "data": "x"}]}).get_json()["batch_job_id"]
    response = client.get(f"/api/batch/{batch_id}/download/pdf", headers=alice[1])
    assert response.status_code == 409
    assert response.get_json()["error"]["job_status"] == "queued"


def test_a_placeholder_with_a_format_is_told_apart_from_an_unknown_one(client, templates,
                                                                        alice):
    formatted = assert_error(client.post(PDF, headers=alice[1], json={
        "template_id": 1, "options": {"data": "{copy:>10}"}}), 422, "options.data")
    assert formatted["message"].startswith("placeholder {copy} takes no format")
    unknown = assert_error(client.post(PDF, headers=alice[1], json={
        "template_id": 1, "options": {"data": "{nope}"}}), 422, "options.data")
    assert unknown["message"].startswith("unknown placeholder {nope}")
