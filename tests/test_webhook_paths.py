"""Every way a job ends or is re-run keeps its webhook: a cancel from the CLI posts it as an
API cancel does, and a retry of a batch's failed items inherits the batch's callback URL
(issue 17)."""

import json
import os
import subprocess
import sys
from pathlib import Path

from qrq import webhooks
from qrq.batch import submit as batch_submit
from qrq.queue import huey, stats
from tests.conftest import ROOT, wait_until
from tests.test_batch import run_job
from tests.test_webhooks import ALLOW, open_client, receiver  # noqa: F401 (fixtures)


def test_a_cancel_from_the_cli_posts_the_webhook_like_an_api_cancel(
        open_client, templates, alice, consumer, receiver, settings):  # noqa: F811
    hook = receiver()
    answer = open_client.post("/api/generate-qr-pdf", headers=alice[1],
                              json={"template_id": 1, "callback_url": hook.url})
    job_id = answer.get_json()["job_id"]
    # A process of its own: the test process has registered every end hook already.
    qrq = str(Path(sys.executable).parent / "qrq")
    done = subprocess.run([qrq, "jobs", "cancel", job_id[:8]], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, "QRQ_DATA_DIR": str(settings.data_dir)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [job_id, "canceled"]
    delivery = stats.search_jobs(huey.storage, job_type="webhook")[0]
    assert [json.loads(one["params"])["job_id"] for one in delivery] == [job_id]
    consumer(extra_env=ALLOW)
    wait_until(lambda: hook.received, timeout=60, message="the cancel's webhook")
    record = json.loads(hook.received[0][1])["job"]
    assert record["job_id"] == job_id and record["status"] == "canceled"


def test_a_retry_of_failed_items_inherits_the_batchs_callback(
        open_client, templates, alice, receiver):  # noqa: F811
    url = receiver().url  # deliveries of the batches run here, to a local server
    too_long = {"template_id": 3, "data": "y" * 2500}  # fails as an item
    answer = open_client.post("/api/batch/generate-qrs", headers=alice[1], json={
        "items": [{"template_id": 1, "data": "a"}, too_long], "callback_url": url})
    assert answer.status_code == 202, answer.get_json()
    parent = answer.get_json()["batch_job_id"]
    run_job(parent)
    retried = open_client.post(f"/api/batch/{parent}/retry-failed", headers=alice[1])
    assert retried.status_code == 202, retried.get_json()
    child = retried.get_json()["batch_job_id"]
    assert webhooks.target_of(huey.storage, child) == {"owner_id": alice[0].id, "url": url}
    # A batch without a callback gives its retry none, even when its owner has a default.
    open_client.put("/api/me/webhook", headers=alice[1], json={"callback_url": url + "&d=1"})
    plain = open_client.post("/api/batch/generate-qrs", headers=alice[1], json={
        "items": [too_long], "callback_url": None}).get_json()["batch_job_id"]
    run_job(plain)
    new_id, _ = batch_submit.enqueue_retry(plain, alice[0].id)
    assert webhooks.target_of(huey.storage, new_id) is None
