"""Batches across processes: a real ``huey_consumer`` shows progress, is killed with
SIGKILL mid-batch and the next consumer resumes; a cancel stops a running batch."""

import io
import math
import zipfile

import pypdf
import pytest

from qrq.cli import main
from qrq.queue import huey, jobs
from tests.conftest import wait_until
from tests.test_batch import submit
from tests.test_qr import decode_page

pytestmark = pytest.mark.slow


def status_of(client, headers, job_id):
    return client.get(f"/api/job-status/{job_id}", headers=headers).get_json()


def test_killed_consumer_the_next_one_resumes_without_duplicates(client, templates, alice,
                                                                 consumer, tmp_path):
    total = 2000
    first = consumer(workers=1)
    job_id = submit(client, alice[1], {"template_ids": [4], "options": {"copies": total}})[
        "batch_job_id"]
    seen = []

    def far_enough():
        status = status_of(client, alice[1], job_id)
        seen.append(status)
        return status["status"] == "running" and status["completed"] >= 300

    wait_until(far_enough, timeout=120, message="300 items done")
    first.kill(9)
    running = [s for s in seen if s["status"] == "running"]
    assert {"completed", "failed", "total", "progress", "stage"} <= set(running[-1])
    assert running[-1]["total"] == total and running[-1]["stage"].startswith("encoding")
    done_at_kill = huey.storage.sql("select completed from batch where job_id = ?",
                                    (job_id,), results=True)[0][0]
    assert 300 <= done_at_kill < total, "the batch should have been killed mid-way"

    second = consumer(workers=1)
    status = wait_until(lambda: (s := status_of(client, alice[1], job_id))["status"]
                        in jobs.ENDED and s, timeout=180, message="the batch to end")
    assert status["status"] == "finished", (status, second.output())
    result = status["result"]
    assert status["attempts"] == 2
    assert result["resumed_after"] == done_at_kill  # it neither started over ...
    assert result["encoded_this_run"] == total - done_at_kill
    assert (status["completed"], status["failed"]) == (total, 0)

    with client.get(f"/api/batch/{job_id}/download/zip", headers=alice[1]) as response:
        names = zipfile.ZipFile(io.BytesIO(response.data)).namelist()
    svgs = [n for n in names if n.endswith(".svg")]
    assert len(svgs) == len(set(svgs)) == total  # ... nor duplicated an output
    assert svgs[0] == "00000-shop.qrcards.example-p-1.svg"
    with client.get(f"/api/batch/{job_id}/download/pdf", headers=alice[1]) as response:
        (tmp_path / "all.pdf").write_bytes(response.data)
    pages = math.ceil(total / 24)
    assert len(pypdf.PdfReader(tmp_path / "all.pdf").pages) == pages
    last = [f"https://shop.qrcards.example/p/{i}" for i in range(24 * (pages - 1) + 1, total + 1)]
    assert decode_page(tmp_path / "all.pdf", pages, tmp_path) == sorted(last)
    assert not list((huey.settings.artifacts_dir).glob(".*"))  # no temporary files left


def test_cancel_stops_a_running_batch_and_keeps_its_finished_items(client, templates, alice,
                                                                   consumer):
    consumer(workers=1)
    total = 3000
    job_id = submit(client, alice[1], {"template_ids": [4], "options": {"copies": total}})[
        "batch_job_id"]
    wait_until(lambda: status_of(client, alice[1], job_id)["completed"] >= 200, timeout=120)
    assert client.delete(f"/api/jobs/{job_id}", headers=alice[1]).status_code == 202
    status = wait_until(lambda: (s := status_of(client, alice[1], job_id))["status"]
                        in jobs.ENDED and s, timeout=60, message="the cancel")
    assert status["status"] == "canceled"
    done = status["completed"]
    assert 200 <= done < total
    ok = client.get(f"/api/batch/{job_id}/items?status=ok&per_page=1",
                    headers=alice[1]).get_json()
    pending = client.get(f"/api/batch/{job_id}/items?status=pending&per_page=1",
                         headers=alice[1]).get_json()
    assert ok["total"] == done and pending["total"] == total - done
    summary = client.get(f"/api/batch/{job_id}", headers=alice[1]).get_json()
    assert summary["downloads"]["zip"]["files"] == done
    assert summary["downloads"]["pdf"]["cards"] == done
    with client.get(summary["downloads"]["pdf"]["url"], headers=alice[1]) as response:
        assert response.status_code == 200


def test_cli_submit_wait_shows_progress_and_the_outputs(runner, templates, consumer,
                                                        tmp_path):
    consumer(workers=1)
    rows = ["data,title"] + [f"https://cards.example/{i},Guest {i}" for i in range(40)]
    rows.append("x" * 3000 + ",Too long")
    (tmp_path / "items.csv").write_text("\n".join(rows) + "\n")
    result = runner.invoke(main, ["batch", "submit", "--csv", str(tmp_path / "items.csv"),
                                  "--template", "3", "--wait", "--timeout", "120"])
    assert result.exit_code == 0, result.output
    assert "queued batch" in result.output and "encoding" in result.output
    assert "finished: 40 ok, 1 failed of 41" in result.output
    assert ".pdf (" in result.output and ".zip (" in result.output
