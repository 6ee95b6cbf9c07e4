"""The analytics chart on the dashboard: the API's report, job status and SVG on the
admin's session (no token), guarded by the session's CSRF token in a header."""

import datetime
import re

from qrq.analytics.scans import write_demo_database
from qrq.queue import huey
from tests.test_api import assert_error

END = datetime.datetime(2026, 11, 22, 12, tzinfo=datetime.UTC).timestamp()
ARGS = {"period": "weekly", "from": "2026-09-01", "to": "2026-11-22", "tz": "UTC"}


def csrf_of(html):
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def test_the_dashboard_chart_runs_on_the_session(client, make_user, settings):
    write_demo_database(settings.data_dir / "analytics" / "scans-000.db", 0, 300, days=120,
                        end=END)
    _, headers = make_user("root", admin=True)
    page = client.get("/admin/login")
    client.post("/admin/login", data={"name": "root", "csrf_token": csrf_of(page.text),
                                      "token": headers["Authorization"].split()[1]})
    html = client.get("/admin/analytics").text
    assert 'data-auth="session"' in html and 'name="token"' not in html
    assert 'href="/admin/analytics" aria-current="page"' in html  # in the navigation
    csrf = re.search(r'data-csrf="([^"]+)"', html)[1]
    url = "/admin/analytics/time-based.json"
    # A cross-site page could make the browser send the cookie, not the header.
    assert_error(client.get(url, query_string=ARGS), 403)
    assert_error(client.get(url, query_string=ARGS, headers={"X-CSRF-Token": "x"}), 403)
    sent = {"X-CSRF-Token": csrf}
    started = client.get(url, query_string=ARGS, headers=sent)
    assert started.status_code == 202
    job_id = started.get_json()["job_id"]
    status = client.get(f"/admin/analytics/jobs/{job_id}.json", headers=sent)
    assert status.status_code == 200 and status.get_json()["status"] == "queued"
    huey.execute(huey.dequeue())
    assert client.get(f"/admin/analytics/jobs/{job_id}.json",
                      headers=sent).get_json()["status"] == "finished"
    report = client.get(url, query_string=ARGS, headers=sent)
    assert report.status_code == 200 and report.get_json()["databases"]["read"] == 1
    chart = client.get("/admin/analytics/time-based.svg", query_string=ARGS, headers=sent)
    assert chart.status_code == 200 and chart.mimetype == "image/svg+xml"
    assert chart.text.startswith("<svg")
    # Logged out: 401 (in the error shape for JSON), never a redirect to the log-in page.
    client.post("/admin/logout", data={"csrf_token": csrf})
    assert_error(client.get(url, query_string=ARGS, headers=sent), 401)
    assert client.get("/admin/analytics/time-based.svg", query_string=ARGS,
                      headers=sent).status_code == 401
