"""The whole system across processes: a real ``huey_consumer huey_app.huey``
subprocess, the API, the PDF on disk, and a QR decoder reading it back."""

import pytest

from tests.conftest import wait_until
from tests.test_qr import decode_page

pytestmark = pytest.mark.slow


def status_of(client, headers, job_id):
    return client.get(f"/api/job-status/{job_id}", headers=headers).get_json()


def test_pdf_job_end_to_end_with_a_real_consumer(client, templates, alice, consumer,
                                                 tmp_path):
    worker = consumer(workers=2)
    # Many one-code pages, so the job runs long enough to watch its progress.
    response = client.post("/api/generate-qr-pdf", headers=alice[1], json={
        "template_id": 1, "options": {"copies": 1000, "title": "Table <1> & co"}})
    assert response.status_code == 202
    job_id = response.get_json()["job_id"]

    seen = []

    def finished():
        status = status_of(client, alice[1], job_id)
        seen.append((status["status"], status["progress"]))
        return status if status["status"] in ("finished", "failed") else None

    status = wait_until(finished, timeout=120, interval=0.01, message="the job to end")
    assert status["status"] == "finished", (status, worker.output())
    running = [p for s, p in seen if s == "running"]
    assert any(0 < p < 100 for p in running), seen
    assert running == sorted(running), "progress went backwards"
    assert status["attempts"] == 1 and status["result"]["pages"] == 1000
    assert status["started_at"] <= status["finished_at"]

    with client.get(status["result"]["download_url"], headers=alice[1]) as download:
        assert download.status_code == 200 and download.mimetype == "application/pdf"
        pdf = tmp_path / "got.pdf"
        pdf.write_bytes(download.data)
    assert decode_page(pdf, 1, tmp_path) == ["https://menu.qrcards.example/t/1/table/1"]
    assert decode_page(pdf, 1000, tmp_path) == ["https://menu.qrcards.example/t/1/table/1000"]


def test_custom_payload_round_trips_through_a_real_decoder(client, templates, alice,
                                                           consumer, tmp_path):
    consumer(workers=1)
    payload = "WIFI:S:QRCards Café;T:WPA;P:p@ss{w}rd;;"
    job_id = client.post("/api/generate-qr-pdf", headers=alice[1], json={
        "template_id": 2, "options": {"data": payload.replace("{", "{{").replace("}", "}}"),
                                      "copies": 1, "error_correction": "H"}}
    ).get_json()["job_id"]
    status = wait_until(lambda: (s := status_of(client, alice[1], job_id))["status"]
                        in ("finished", "failed") and s, timeout=60)
    assert status["status"] == "finished", status
    with client.get(status["result"]["download_url"], headers=alice[1]) as download:
        (tmp_path / "one.pdf").write_bytes(download.data)
    assert decode_page(tmp_path / "one.pdf", 1, tmp_path) == [payload]


def test_cli_pdf_wait_saves_the_pdf(runner, templates, consumer, tmp_path):
    from qrq.cli import main

    consumer(workers=1)
    out = tmp_path / "cards.pdf"
    result = runner.invoke(main, ["pdf", "2", "-o", "copies=8", "--wait", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"saved {out}" in result.output
    assert decode_page(out, 1, tmp_path) == sorted(
        f"https://cards.qrcards.example/c/2/{i}" for i in range(1, 9))
