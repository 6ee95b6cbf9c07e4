"""The completion mail of a batch, through a real SMTP server (aiosmtpd) or the outbox."""

import dataclasses
import email
import email.policy

from qrq.queue import huey, jobs
from tasks.batch import mail_owner
from tests.conftest import free_port
from tests.test_batch import run_job, submit


def configure(settings, **changes):
    from qrq.web import create_app

    changed = dataclasses.replace(settings, **changes)
    app = create_app({"SETTINGS": changed, "TESTING": True})  # also points huey at it
    return app.test_client()


def read(envelope):
    return email.message_from_bytes(envelope.content, policy=email.policy.default)


def test_completion_mail_goes_to_the_owner_over_smtp(settings, templates, alice,
                                                     smtp_server):
    inbox, port = smtp_server
    client = configure(settings, smtp_host="127.0.0.1", smtp_port=port,
                       smtp_security="none", base_url="https://qrq.example/")
    items = [{"template_id": 4, "data": f"https://shop.example/{i}"} for i in range(9)]
    items.append({"template_id": 4, "data": "z" * 4000})  # too long for a code: fails
    job_id = submit(client, alice[1], {"items": items})["batch_job_id"]
    assert run_job(job_id)["status"] == "finished"
    status = client.get(f"/api/job-status/{job_id}", headers=alice[1]).get_json()
    mail_id = status["result"]["mail_job_id"]
    assert run_job(mail_id)["status"] == "finished"

    assert len(inbox.messages) == 1
    envelope = inbox.messages[0]
    assert envelope.rcpt_tos == ["alice@example.com"]
    message = read(envelope)
    assert message["Subject"] == "qrq batch finished: 9/10 codes (90.0%)"
    body = message.get_content()
    assert "Succeeded:    9" in body and "Failed:       1" in body
    assert f"https://qrq.example/api/batch/{job_id}/download/pdf" in body
    assert f"https://qrq.example/api/batch/{job_id}/download/zip" in body
    assert f"https://qrq.example/api/batch/{job_id}/items?status=failed" in body
    mail_job = jobs.get(huey.storage, mail_id)
    assert mail_job["owner_id"] == alice[0].id and mail_job["type"] == "mail"

    # A re-run of the batch (after a crash) queues no second mail.
    assert mail_owner(job_id, lambda base: ("again", "")) == mail_id
    assert huey.storage.queue_size() == 0


def test_a_batch_whose_every_item_failed_mails_its_owner_so(settings, templates, alice,
                                                             smtp_server):
    inbox, port = smtp_server
    client = configure(settings, smtp_host="127.0.0.1", smtp_port=port,
                       smtp_security="none", base_url="https://qrq.example/")
    items = [{"template_id": 4, "data": "z" * 4000 + str(i)} for i in range(3)]  # too long
    job_id = submit(client, alice[1], {"items": items})["batch_job_id"]
    assert run_job(job_id)["status"] == "failed"
    mail_id = next(job["job_id"] for job in client.get(
        "/api/jobs?type=mail", headers=alice[1]).get_json()["jobs"])
    assert run_job(mail_id)["status"] == "finished"
    message = read(inbox.messages[0])
    assert message["Subject"] == "qrq batch failed: 0/3 codes"
    assert f"https://qrq.example/api/batch/{job_id}/items?status=failed" in message.get_content()
    assert len(inbox.messages) == 1


def test_without_smtp_host_the_mail_is_an_eml_in_the_outbox(client, settings, templates,
                                                            alice):
    job_id = submit(client, alice[1], {"template_ids": [1, 2]})["batch_job_id"]
    run_job(job_id)
    mail_id = client.get(f"/api/job-status/{job_id}", headers=alice[1]).get_json()[
        "result"]["mail_job_id"]
    run_job(mail_id)
    written = list(settings.outbox_dir.glob("*.eml"))
    assert len(written) == 1
    message = email.message_from_bytes(written[0].read_bytes(), policy=email.policy.default)
    assert message["To"] == "alice@example.com"
    assert "2/2 codes (100.0%)" in message["Subject"]


def test_a_failing_mail_is_retried_and_never_fails_the_batch(settings, templates, alice):
    client = configure(settings, smtp_host="127.0.0.1", smtp_port=free_port(),
                       smtp_security="none")  # nothing listens there
    job_id = submit(client, alice[1], {"template_ids": [1]})["batch_job_id"]
    assert run_job(job_id)["status"] == "finished"
    mail_id = client.get(f"/api/job-status/{job_id}", headers=alice[1]).get_json()[
        "result"]["mail_job_id"]
    huey.execute(huey.dequeue())
    mail_job = jobs.get(huey.storage, mail_id)
    assert mail_job["status"] == "retrying" and "not sent" in mail_job["error"]
    assert jobs.get(huey.storage, job_id)["status"] == "finished"


def test_no_mail_for_a_user_without_an_address(client, templates, make_user):
    _, headers = make_user("noemail")
    job_id = submit(client, headers, {"template_ids": [1]})["batch_job_id"]
    run_job(job_id)
    result = client.get(f"/api/job-status/{job_id}", headers=headers).get_json()["result"]
    assert result["mail_job_id"] is None and huey.storage.queue_size() == 0
