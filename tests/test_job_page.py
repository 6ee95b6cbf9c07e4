"""The dashboard's job page reads like a report, not JSON: each job type's result laid out
(a PDF, a batch, an analytics report, a backup), anything else as key/value tables, the
raw JSON behind a toggle, sizes in the CLI's units, and every attempt with its error.
Jobs run through the real queue storage; the retries on a real consumer; the toggle in
headless chromium."""

import html as htmllib
import json
import re
import shutil

import pytest

from qrq.cli import main
from qrq.humanize import format_bytes
from qrq.queue import huey, job_task, jobs, submit
from qrq.web.dashboard.job_details import timings
from tasks.backup import run_backup_task
from tests import retry_tasks
from tests.conftest import wait_until
from tests.test_analytics_api import ARGS, scan_dbs  # noqa: F401  (fixture)
from tests.test_backup import make_db


@job_task("maintenance", name="test.page_nested")
def nested_result(task=None):
    return {"kind": "manual", "moved_bytes": 5 * 1024 ** 2, "done_at": 0,
            "parts": [{"name": "a<b>", "size": 2048}, {"name": "c", "size": 10}],
            "flags": {"dry_run": False}, "labels": ["x", "y"]}


def csrf_of(page):
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


@pytest.fixture
def admin(client, make_user):
    """The test client, logged in to the dashboard as an admin with an address."""
    _, headers = make_user("root", admin=True, email="root@example.com")
    token = headers["Authorization"].split(" ", 1)[1]
    login = client.post("/admin/login", data={
        "name": "root", "token": token, "csrf_token": csrf_of(client.get("/admin/login").text)})
    assert login.status_code == 302
    return client, headers


def run_until_ended(job_id):
    """Run queued work here (retries included) until *job_id* has ended."""
    def step():
        if huey.storage.queue_size():
            task = huey.dequeue()
            if task is not None:
                huey.execute(task)
        else:
            huey.read_schedule()  # a retry moves to the queue once it is due
        return jobs.get(huey.storage, job_id)["status"] in jobs.ENDED
    wait_until(step, timeout=60, message=f"job {job_id} to end")
    return jobs.get(huey.storage, job_id)


def section(page, element_id):
    """The element with *element_id* (a <table>, <dl>, <div>, <section>...) as HTML."""
    match = re.search(rf'<(\w+)[^>]*id="{element_id}"', page)
    assert match, f"no #{element_id} on the page"
    tag, start, depth = match.group(1), match.start(), 0
    for found in re.finditer(rf"<(/?){tag}\b", page[start:]):
        depth += -1 if found.group(1) else 1
        if depth == 0:
            return page[start:start + found.end()]
    raise AssertionError(f"#{element_id} is not closed")


def cells(table):
    """The text of each row's cells, tags stripped."""
    return [[htmllib.unescape(re.sub(r"<[^>]+>", "", c)).strip()
             for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
            for row in re.findall(r"<tr[^>]*>(.*?)</tr>", table, re.S) if "<td" in row]


def raw_json(page, element_id):
    """The JSON behind the raw toggle *element_id* (a <details>, closed)."""
    match = re.search(rf'<details class="raw" id="{element_id}">\s*<summary>raw JSON</summary>'
                      r'\s*<pre class="code">(.*?)</pre>', page, re.S)
    assert match, f"no raw toggle #{element_id}"
    return json.loads(htmllib.unescape(match.group(1)))


def test_a_pdf_job_shows_its_pages_size_and_download(admin, templates):
    client, headers = admin
    job_id = client.post("/api/generate-qr-pdf", headers=headers, json={
        "template_id": 1, "options": {"copies": 30}}).get_json()["job_id"]
    result = json.loads(run_until_ended(job_id)["result"])
    page = client.get(f"/admin/jobs/{job_id}").text
    facts = section(page, "result-pdf")
    assert re.search(rf'id="pdf-pages">{result["pages"]}<', facts) and result["pages"] >= 2
    size = format_bytes(result["bytes"])
    assert f'title="{result["bytes"]:,} bytes">{size}<' in facts
    assert re.fullmatch(r"[\d.,]+ KiB", size)  # binary units, as the CLI writes them
    link = re.search(r'id="pdf-download" href="([^"]+)"', facts).group(1)
    assert link == f"/admin/jobs/{job_id}/files/{job_id}.pdf"
    with client.get(link) as download:
        assert download.data.startswith(b"%PDF") and len(download.data) == result["bytes"]
    assert raw_json(page, "result-raw") == result  # the JSON is still there, folded
    assert raw_json(page, "params-raw") == {"template_id": 1, "options": {"copies": 30}}
    params = cells(section(page, "params"))
    assert ["30"] in params or any("copies" in " ".join(r) for r in params)
    assert 'id="outputs"' not in page  # the download above is the file list
    assert [(a[0], a[5]) for a in cells(section(page, "attempts"))] == [("1", "finished")]


def test_a_batch_job_shows_its_counts_files_and_mail(admin, templates):
    client, headers = admin
    items = [{"template_id": 3, "data": "z" * 2600} ] + [
        {"template_id": 1, "data": f"https://menu.example/{i}"} for i in range(5)]
    job_id = client.post("/api/batch/generate-qrs", headers=headers,
                         json={"items": items}).get_json()["batch_job_id"]
    result = json.loads(run_until_ended(job_id)["result"])
    page = client.get(f"/admin/jobs/{job_id}").text
    facts = section(page, "result-batch")
    assert "6: 5 ok," in facts and "1 failed" in facts and "(83.3% succeeded)" in facts
    files = cells(section(page, "batch-files"))
    assert [row[0] for row in files] == [f"PDF {job_id}.pdf", f"ZIP {job_id}.zip"]
    assert files[0][1] == f"{result['pdf']['pages']} page(s), 5 card(s)"
    assert files[1][1] == "5 file(s), SVG"  # the formats in capitals, "and" as it is
    assert [row[2] for row in files] == [format_bytes(result["pdf"]["bytes"]),
                                          format_bytes(result["zip"]["bytes"])]
    mail = section(page, "batch-mail")
    assert f'href="/admin/jobs/{result["mail_job_id"]}"' in mail
    assert "root@example.com" in mail and "queued" in mail  # the mail job has not run
    run_until_ended(result["mail_job_id"])
    assert "finished" in section(client.get(f"/admin/jobs/{job_id}").text, "batch-mail")


def test_a_backup_job_shows_a_table_per_database_in_the_clis_units(admin, settings, runner):
    client, _ = admin
    make_db(settings.data_dir / "analytics" / "shop.db")
    first = run_until_ended(submit(run_backup_task, "manual", owner_id=None))
    first_set = json.loads(first["result"])["set_id"]
    second_id = submit(run_backup_task, "manual", owner_id=None)
    result = json.loads(run_until_ended(second_id)["result"])
    page = client.get(f"/admin/jobs/{second_id}").text
    assert result["set_id"] in section(page, "result-backup")
    rows = {row[0]: row for row in cells(section(page, "backup-databases"))}
    assert set(rows) == {d["name"] for d in result["databases"]}
    shop = next(d for d in result["databases"] if d["name"] == "analytics/shop.db")
    assert shop["reused_from"] == first_set  # unchanged since the first set
    assert rows["analytics/shop.db"][1] == "ok"
    # The second set replaced the first as the day's (retention), so the file it reused
    # lives on only in the second (a hard link).
    assert result["removed_sets"] == [first_set]
    assert rows["analytics/shop.db"][5] == f"{first_set} (removed since)"
    assert rows["analytics/shop.db"][2] == format_bytes(shop["size"])
    # The CLI writes the same size the same way.
    listed = runner.invoke(main, ["backup", "list", result["set_id"]])
    assert listed.exit_code == 0, listed.output
    line = next(x for x in listed.output.splitlines() if "analytics/shop.db" in x)
    assert format_bytes(shop["size"]) in line
    assert "set-removed" not in page
    assert "set-removed" in client.get(f"/admin/jobs/{first['id']}").text
    # The second set goes too: its report stays, and says so.
    shutil.rmtree(settings.backups_dir / result["set_id"])
    page = client.get(f"/admin/jobs/{second_id}").text
    assert "it cannot be restored" in section(page, "result-backup")
    # A host without the sets (on several hosts they are on the worker's) cannot tell.
    shutil.rmtree(settings.backups_dir)
    page = client.get(f"/admin/jobs/{second_id}").text
    assert "set-removed" not in page and "removed since" not in page


def test_an_analytics_job_shows_buckets_top_lists_and_a_chart_link(admin, scan_dbs):  # noqa: F811
    client, headers = admin
    job_id = client.get("/api/analytics/time-based", query_string=ARGS,
                        headers=headers).get_json()["job_id"]
    result = json.loads(run_until_ended(job_id)["result"])
    page = client.get(f"/admin/jobs/{job_id}").text
    buckets = cells(section(page, "analytics-buckets"))
    assert [row[0] for row in buckets] == [b["label"] for b in result["series"]]
    assert [row[2] for row in buckets] == [f"{b['scans']:,}" for b in result["series"]]
    assert f"{result['totals']['scans']:,}" in section(page, "analytics-scans")
    top = section(page, "analytics-top")
    for name, rows in result["top"].items():
        assert f"<th>{name.capitalize()}</th>" in top
        for row in rows:
            key = next(v for k, v in row.items() if k != "scans")
            assert f"<td>{htmllib.escape(str(key))}</td>" in top
    chart = htmllib.unescape(re.search(r'id="analytics-chart" href="([^"]+)"', page).group(1))
    assert chart.startswith("/analytics/chart?") and "period=weekly" in chart
    assert "tz=Europe/Berlin" in chart and f"from={result['params']['from']}" in chart
    assert client.get(chart).status_code == 200


def test_any_other_result_is_a_readable_key_value_table(admin, settings):
    client, _ = admin
    job_id = submit(nested_result, owner_id=None)
    run_until_ended(job_id)
    (settings.artifacts_dir / f"{job_id}.log").write_bytes(b"x" * 3000)
    page = client.get(f"/admin/jobs/{job_id}").text
    assert cells(section(page, "outputs").replace("<li>", "<tr><td>").replace(
        "</li>", "</td></tr>")) == [[f"{job_id}.log (2.9 KiB)"]]
    table = section(page, "result-table")
    assert "<th scope=\"row\">moved bytes</th><td>" in table
    assert format_bytes(5 * 1024 ** 2) == "5.0 MiB" and "5.0 MiB" in table
    assert "a&lt;b&gt;" in table and "<b>" not in table  # escaped
    assert [["a<b>", "2.0 KiB"], ["c", "10 B"]] == cells(
        table.split('class="kv-records"', 1)[1])
    assert "1970-01-01 00:00:00 UTC" in table  # a time, written out
    assert "x, y" in table and "dry run" in table and ">no<" in table
    assert raw_json(page, "result-raw")["parts"][0]["name"] == "a<b>"


def test_a_result_of_an_unexpected_shape_falls_back_to_the_table(admin, templates):
    client, headers = admin
    job_id = client.post("/api/generate-qr-pdf", headers=headers,
                         json={"template_id": 1}).get_json()["job_id"]
    run_until_ended(job_id)
    # As an older version might have left it: no pages, no size.
    huey.storage.sql("update job set result = ? where id = ?",
                     (json.dumps({"artifact": f"{job_id}.pdf", "note": "old"}), job_id),
                     commit=True)
    page = client.get(f"/admin/jobs/{job_id}").text
    assert 'id="result-pdf"' not in page and "old" in section(page, "result-table")


@pytest.mark.parametrize("name, result", [
    ("pdf.generate", {"pages": "many", "bytes": None}),
    ("batch.generate", {"total": 1, "completed": 0, "failed": 1, "pdf": "junk", "seconds": 5,
                        "mail_job_id": "not-a-job"}),
    ("analytics.time_based", {"series": "junk", "top": ["junk"]}),
    ("backup.run", {"set_id": 1, "databases": ["junk", {"name": "x"}], "duration": "long"}),
    ("backup.scheduled", {"skipped": "backup already ran since it was due"}),
])
def test_a_result_of_any_shape_renders(admin, name, result):
    """A result another version wrote (or a skipped run's) is shown, never a 500."""
    client, _ = admin
    job_id = submit(nested_result, owner_id=None)
    run_until_ended(job_id)
    huey.storage.sql("update job set name = ?, result = ? where id = ?",
                     (name, json.dumps(result), job_id), commit=True)
    response = client.get(f"/admin/jobs/{job_id}")
    assert response.status_code == 200
    assert raw_json(response.text, "result-raw") == result


def test_an_unfinished_job_has_no_result_and_no_attempt_yet(admin):
    client, _ = admin
    job_id = submit(nested_result, owner_id=None)
    page = client.get(f"/admin/jobs/{job_id}").text
    assert 'id="result"' not in page and "Not run yet" in section(page, "attempt-history")


def test_each_attempt_with_its_error_through_real_storage(admin):
    client, _ = admin
    job_id = submit(retry_tasks.fails_then_succeeds, 2, owner_id=None)
    run_until_ended(job_id)
    rows = cells(section(client.get(f"/admin/jobs/{job_id}").text, "attempts"))
    assert [(r[0], r[5], r[6]) for r in rows] == [
        ("1", "failed", "RuntimeError: attempt 1 failed on purpose"),
        ("2", "failed", "RuntimeError: attempt 2 failed on purpose"),
        ("3", "finished", "")]


@pytest.mark.slow
def test_a_job_failing_twice_then_succeeding_on_a_real_consumer_shows_three_attempts(
        admin, consumer):
    client, _ = admin
    job_id = submit(retry_tasks.fails_then_succeeds, 2, owner_id=None)
    worker = consumer(workers=1, extra_env={"QRQ_TASK_MODULES": "tests.retry_tasks"})
    wait_until(lambda: jobs.get(huey.storage, job_id)["status"] == "finished", timeout=60,
               message="the job to finish on its third attempt")
    page = client.get(f"/admin/jobs/{job_id}").text
    rows = cells(section(page, "attempts"))
    assert [(r[0], r[5], r[6]) for r in rows] == [
        ("1", "failed", "RuntimeError: attempt 1 failed on purpose"),
        ("2", "failed", "RuntimeError: attempt 2 failed on purpose"),
        ("3", "finished", "")], worker.output()[-2000:]
    assert all(f":{worker.proc.pid}:" in r[4] for r in rows)  # the worker of each
    assert all(r[1].endswith("UTC") and r[2].endswith("UTC") for r in rows)
    assert 'id="error"' not in page  # it finished: no error left on the job


def test_the_timings_follow_the_latest_run_and_the_first_wait():
    created, job = 1000.0, {"created_at": 1000.0, "status": "retrying", "started_at": 1002.0,
                            "finished_at": None}
    failed = {"n": 1, "started_at": 1002.0, "ended_at": 1002.5, "took": 0.5}
    # Waiting for its retry: not running for the time since its first start.
    assert timings(job, [failed], now=1100.0) == {"waited": 2.0, "running": None,
                                                  "ran": None}
    second = {"n": 2, "started_at": 1090.0, "ended_at": None, "took": None}
    running = {**job, "status": "running"}
    assert timings(running, [failed, second], now=1100.0)["running"] == 10.0
    second.update(ended_at=1093.0, took=3.0)
    finished = {**job, "status": "finished", "finished_at": 1093.0}
    assert timings(finished, [failed, second], now=1200.0) == {"waited": 2.0,
                                                                "running": None, "ran": 3.0}
    # Canceled while it waited for a retry: its last run did not run until the cancel.
    canceled = {**job, "status": "canceled", "finished_at": 1500.0}
    assert timings(canceled, [failed], now=1600.0)["ran"] is None
    # A job that ran once has no attempt rows: the job row says it all.
    once = {"created_at": created, "status": "finished", "started_at": 1001.0,
            "finished_at": 1004.0}
    assert timings(once, [], now=2000.0) == {"waited": 1.0, "running": None, "ran": 3.0}
