"""One paging convention for every list: limit + opaque cursor, ``next`` and ``Link``;
unknown filter values are 422 (issue 17)."""

import dataclasses

import pytest

from qrq.backup import run_backup
from qrq.queue import submit
from tests.slow_tasks import steps
from tests.test_api import assert_error


def follow(client, url, headers, key):
    """Every item of a list, page by page through ``next``; checks Link matches it."""
    seen, pages = [], 0
    while url:
        response = client.get(url, headers=headers)
        assert response.status_code == 200, response.get_json()
        body = response.get_json()
        seen.extend(body[key])
        link = response.headers.get("Link")
        if body["next"]:
            assert link == f'<http://localhost{body["next"]}>; rel="next"'
        else:
            assert link is None
        url, pages = body["next"], pages + 1
    return seen, pages


def test_the_link_is_relative_when_the_host_header_is_unusable(client, alice):
    user, headers = alice
    for _ in range(2):
        submit(steps, 1, 0, owner_id=user.id)
    for host in ("", "a b", "x/y"):
        response = client.get("/api/jobs?limit=1", headers=headers,
                              environ_overrides={"HTTP_HOST": host})
        assert response.headers["Link"] == f'<{response.get_json()["next"]}>; rel="next"'


def test_the_link_is_on_the_base_url_when_one_is_set_whatever_the_host(settings, alice):
    from qrq.web import create_app

    client = create_app({"SETTINGS": dataclasses.replace(
        settings, base_url="https://qrq.example/cards/"), "TESTING": True}).test_client()
    user, headers = alice
    for _ in range(2):
        submit(steps, 1, 0, owner_id=user.id)
    for host in ("evil.example", "localhost", ""):
        response = client.get("/api/jobs?limit=1", headers=headers,
                              environ_overrides={"HTTP_HOST": host})
        after = response.get_json()["next"]
        assert after.startswith("/api/jobs?limit=1&cursor=")  # no host: the app's path
        assert response.headers["Link"] == f'<https://qrq.example/cards{after}>; rel="next"'


def test_jobs_page_by_cursor_and_new_jobs_do_not_shift_pages(client, alice):
    user, headers = alice
    made = [submit(steps, 1, 0, owner_id=user.id) for _ in range(5)]
    first = client.get("/api/jobs?limit=2", headers=headers).get_json()
    submit(steps, 1, 0, owner_id=user.id)  # newer: on no page after the first
    rest, pages = follow(client, first["next"], headers, "jobs")
    listed = [j["job_id"] for j in first["jobs"] + rest]
    assert listed == made[::-1] and pages == 2
    # The old offset parameter still works.
    body = client.get("/api/jobs?limit=2&offset=2", headers=headers).get_json()
    assert [j["job_id"] for j in body["jobs"]] == [made[-2], made[-3]]
    assert body["next"]
    # Both: which one says where the page starts? Neither, silently.
    both = client.get(f"{first['next']}&offset=2", headers=headers)
    assert both.status_code == 422 and both.get_json()["error"]["field"] == "offset"


@pytest.mark.parametrize("query,field", [
    ("type=bogus", "type"), ("status=bogus", "status"), ("cursor=bogus", "cursor"),
    ("cursor=e30", "cursor"), ("limit=0", "limit"), ("limit=201", "limit"),
    # {"t":1,"id":"\ud800"}: JSON allows a lone surrogate, no database takes it as text
    ("cursor=eyJ0IjoxLCJpZCI6Ilx1ZDgwMCJ9", "cursor"),
    # {"t":1,"id":"\u0000"}: NUL, which PostgreSQL's text does not take
    ("cursor=eyJ0IjoxLCJpZCI6Ilx1MDAwMCJ9", "cursor")])
def test_unknown_filters_and_foreign_cursors_are_422(client, alice, query, field):
    assert_error(client.get(f"/api/jobs?{query}", headers=alice[1]), 422, field)


def test_batch_items_page_by_cursor_and_keep_page_numbers(client, templates, alice):
    headers = alice[1]
    body = client.post("/api/batch/generate-qrs", headers=headers, json={
        "items": [{"template_id": 1, "data": str(n)} for n in range(7)]}).get_json()
    url = f"/api/batch/{body['batch_job_id']}/items"
    items, pages = follow(client, f"{url}?limit=3", headers, "items")
    assert [i["idx"] for i in items] == list(range(7)) and pages == 3
    old = client.get(f"{url}?page=2&per_page=3", headers=headers).get_json()
    assert [i["idx"] for i in old["items"]] == [3, 4, 5] and old["next_page"] == 3
    assert_error(client.get(f"{url}?status=bogus", headers=headers), 422, "status")


def test_reports_list_pages_the_same_way(client, alice):
    body = client.get("/api/analytics/reports?limit=1", headers=alice[1]).get_json()
    assert body["reports"] == [] and body["next"] is None


def test_backups_page_by_cursor_for_admins(client, settings, make_user):
    _, admin = make_user("root", admin=True)
    _, plain = make_user("bob")
    ids = [run_backup(settings, "manual")["id"] for _ in range(3)]
    sets, pages = follow(client, "/api/admin/backups?limit=2", admin, "backups")
    assert [s["id"] for s in sets] == ids[::-1] and pages == 2
    assert all(isinstance(name, str) for s in sets for name in s["databases"])
    assert_error(client.get("/api/admin/backups?kind=bogus", headers=admin), 422, "kind")
    assert_error(client.get("/api/admin/backups", headers=plain), 403)
    assert client.get("/api/admin/backups", headers=admin).get_json()["sets_here"] is True
    # A web host without the backup directory (the sets are on a worker host) says so.
    settings.backups_dir.rename(settings.backups_dir.with_name("elsewhere"))
    body = client.get("/api/admin/backups", headers=admin).get_json()
    assert body["backups"] == [] and body["sets_here"] is False


def test_retry_after_on_every_202_and_on_unfinished_status(client, templates, alice):
    headers = alice[1]
    pdf = client.post("/api/generate-qr-pdf", headers=headers, json={"template_id": 1})
    batch = client.post("/api/batch/generate-qrs", headers=headers, json={
        "items": [{"template_id": 1, "data": "a"}]})
    cancel = client.delete(f"/api/jobs/{pdf.get_json()['job_id']}", headers=headers)
    for answer in (pdf, batch, cancel):
        assert answer.status_code == 202 and answer.headers["Retry-After"] == "2"
    batch_id = batch.get_json()["batch_job_id"]
    assert client.get(f"/api/batch/{batch_id}", headers=headers).headers["Retry-After"] == "2"
    ended = client.get(f"/api/jobs/{pdf.get_json()['job_id']}", headers=headers)
    assert ended.get_json()["status"] == "canceled" and "Retry-After" not in ended.headers


def test_the_link_keeps_the_path_a_proxy_mounts_the_app_under(client, alice):
    user, headers = alice
    for _ in range(2):
        submit(steps, 1, 0, owner_id=user.id)
    response = client.get("/api/jobs?limit=1", headers=headers,
                          environ_overrides={"SCRIPT_NAME": "/cards"})
    assert response.headers["Link"].startswith("<http://localhost/cards/api/jobs?limit=1&cursor=")
    # ...while next stays the path under the app, as the Python client joins it to its base.
    assert response.get_json()["next"].startswith("/api/jobs?")
