"""Alerts: what fires, logged once, mailed at most once per kind and interval across
processes, by the periodic task, by the web app, over real SMTP or into the outbox."""

import dataclasses
import email
import logging
import subprocess
import sys
import time

import pytest

import tasks.alerts
from qrq import alerts
from qrq.queue import huey, job_task, submit
from tests.conftest import ROOT, wait_until


@job_task("pdf", name="test.alerts_noop")
def noop(task=None):
    return None


def with_settings(settings, **changes):
    """Settings with *changes*, applied to the Huey instance the code reads."""
    changed = dataclasses.replace(settings, **changes)
    huey.settings = changed
    return changed


def register_consumer():
    consumer = huey.create_consumer(workers=1, worker_type="thread")
    consumer._register()
    return consumer


def kinds(found):
    return [a["kind"] for a in found]


def outbox(settings):
    folder = settings.outbox_dir
    return sorted(folder.glob("*.eml")) if folder.is_dir() else []


def test_no_consumer_fires_until_a_heartbeat_is_seen(settings):
    assert kinds(alerts.evaluate(huey.storage, settings)) == ["no_consumer"]
    register_consumer()
    assert alerts.evaluate(huey.storage, settings) == []
    later = time.time() + settings.alert_heartbeat_age + 1
    found = alerts.evaluate(huey.storage, settings, later)
    assert kinds(found) == ["no_consumer"] and "last consumer heartbeat" in found[0]["message"]


def test_backlog_and_queue_age_fire_past_their_thresholds(settings):
    settings = with_settings(settings, alert_backlog=2, alert_queue_age=60)
    register_consumer()
    for _ in range(2):
        submit(noop, owner_id=None)
    assert alerts.evaluate(huey.storage, settings) == []  # 2 is not above 2
    submit(noop, owner_id=None)
    found = alerts.evaluate(huey.storage, settings)
    assert kinds(found) == ["backlog"]
    assert found[0]["value"] == 3 and found[0]["threshold"] == 2
    # Delayed jobs are not backlog: they are not due.
    submit(noop, owner_id=None, delay=3600)
    assert alerts.evaluate(huey.storage, settings)[0]["value"] == 3
    later = alerts.evaluate(huey.storage, settings, time.time() + 61)
    assert "queue_age" in kinds(later)
    assert "(pdf)" in [a for a in later if a["kind"] == "queue_age"][0]["message"]


def test_an_alert_is_logged_once_when_it_starts_and_when_it_ends(settings, caplog):
    caplog.set_level(logging.INFO, logger="qrq.alerts")
    firing = alerts.evaluate(huey.storage, settings)
    alerts.record(huey.storage, firing)
    alerts.record(huey.storage, alerts.evaluate(huey.storage, settings))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "no_consumer" in warnings[0].getMessage()
    register_consumer()
    assert alerts.record(huey.storage, alerts.evaluate(huey.storage, settings)) == []
    assert any("no_consumer resolved" in r.getMessage() for r in caplog.records)


def test_mail_is_rate_limited_per_kind_and_retried_after_a_failure(settings):
    sent = []
    now = time.time()
    firing = alerts.record(huey.storage, alerts.evaluate(huey.storage, settings, now), now)

    def deliver(to, subject, body):
        sent.append((to, subject, body))

    to = ["ops@example.com"]
    assert alerts.mail_alerts(huey.storage, settings, firing, to, deliver, now) == [
        "no_consumer"]
    assert alerts.mail_alerts(huey.storage, settings, firing, to, deliver, now + 60) == []
    assert len(sent) == 1
    subject, body = sent[0][1], sent[0][2]
    assert subject.startswith("[qrq] alert: no consumer is running") and "no_consumer" in body

    def broken(to, subject, body):
        raise OSError("smtp down")

    later = now + settings.alert_mail_interval + 1
    assert alerts.mail_alerts(huey.storage, settings, firing, to, broken, later) == []
    # The failed send gave its claim back, so the next check mails.
    assert alerts.mail_alerts(huey.storage, settings, firing, to, deliver, later + 60) == [
        "no_consumer"]
    assert len(sent) == 2


def test_a_resolved_alert_is_not_mailed(settings):
    firing = alerts.record(huey.storage, alerts.evaluate(huey.storage, settings))
    register_consumer()
    alerts.record(huey.storage, alerts.evaluate(huey.storage, settings))
    assert not alerts.claim_mail(huey.storage, firing[0]["kind"], 3600)


CLAIM = """
import sys
from qrq.config import load_settings
from qrq.queue import huey
from qrq import alerts
huey.init(load_settings())
sys.stdin.readline()  # start together
print(alerts.claim_mail(huey.storage, "no_consumer", 3600))
"""


def test_only_one_of_several_processes_claims_the_mail(settings):
    alerts.record(huey.storage, alerts.evaluate(huey.storage, settings))
    env = {"QRQ_DATA_DIR": str(settings.data_dir), "PATH": "/usr/bin:/bin",
           "QRQ_DATABASE_URL": settings.database_url}
    procs = [subprocess.Popen([sys.executable, "-c", CLAIM], cwd=ROOT, env=env, text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE) for _ in range(4)]
    outputs = [proc.communicate("go\n", timeout=60)[0].strip() for proc in procs]
    assert sorted(outputs) == ["False", "False", "False", "True"]


def test_recipients_are_admins_with_an_address_plus_the_setting(settings, make_user):
    make_user("root", admin=True, email="root@example.com")
    make_user("noaddress", admin=True)
    make_user("bob", email="bob@example.com")
    changed = dataclasses.replace(settings, alert_mail_to="oncall@example.com, root@example.com")
    assert alerts.recipients(changed) == ["root@example.com", "oncall@example.com"]


def test_the_periodic_task_checks_records_and_mails_into_the_outbox(settings, make_user):
    make_user("root", admin=True, email="root@example.com")
    # Through real storage: enqueued, unpickled, run like the consumer does.
    huey.enqueue(tasks.alerts.check_alerts_task.s())
    task = huey.dequeue()
    assert task.name == "alerts.check" and task.priority == tasks.alerts.PRIORITY
    huey.execute(task)
    assert alerts.last_check(huey.storage) is not None
    mails = outbox(settings)
    assert len(mails) == 1
    message = email.message_from_bytes(mails[0].read_bytes())
    assert message["To"] == "root@example.com"
    assert "no consumer is running" in message["Subject"]
    # The next minute's check sends nothing new: one mail per kind per hour.
    huey.enqueue(tasks.alerts.check_alerts_task.s())
    huey.execute(huey.dequeue())
    assert len(outbox(settings)) == 1


def test_alert_mail_goes_over_real_smtp(settings, make_user, smtp_server):
    inbox, port = smtp_server
    make_user("root", admin=True, email="root@example.com")
    settings = with_settings(settings, smtp_host="127.0.0.1", smtp_port=port,
                             smtp_security="none")
    result = tasks.alerts.check_alerts()
    assert result == {"alerts": ["no_consumer"], "mailed": ["no_consumer"]}
    assert len(inbox.messages) == 1
    assert inbox.messages[0].rcpt_tos == ["root@example.com"]
    assert b"no consumer is running" in inbox.messages[0].content
    assert outbox(settings) == []


def test_the_dashboard_and_metrics_raise_the_no_consumer_alert_without_a_consumer(
        client, settings, make_user):
    _, admin = make_user("root", admin=True, email="root@example.com")
    response = client.get("/metrics", headers=admin)
    assert response.status_code == 200
    assert 'qrq_alert_firing{kind="no_consumer"} 1.0' in response.text
    # The mail goes out from a background thread, once.
    wait_until(lambda: outbox(settings), timeout=20, message="the alert mail")
    client.get("/metrics", headers=admin)
    status = client.get("/api/admin/queue-status", headers=admin).get_json()
    assert [a["kind"] for a in status["alerts"]] == ["no_consumer"]
    assert len(outbox(settings)) == 1


@pytest.mark.slow
def test_a_real_consumer_clears_the_no_consumer_alert(settings, consumer):
    assert kinds(alerts.evaluate(huey.storage, settings)) == ["no_consumer"]
    worker = consumer(workers=1)
    wait_until(lambda: alerts.evaluate(huey.storage, settings) == [], timeout=60,
               message="the consumer's registration")
    worker.stop()  # a clean stop deregisters
    assert kinds(alerts.evaluate(huey.storage, settings)) == ["no_consumer"]


def test_without_recipients_the_alert_is_logged_once_per_interval(settings, caplog):
    caplog.set_level(logging.WARNING, logger="qrq.alerts")
    now = time.time()
    firing = alerts.record(huey.storage, alerts.evaluate(huey.storage, settings, now), now)
    sent = []
    for later in (now, now + 60):
        assert alerts.mail_alerts(huey.storage, settings, firing, [],
                                  lambda *a: sent.append(a), later) == []
    said = [r for r in caplog.records if "no recipient" in r.getMessage()]
    assert len(said) == 1 and sent == []
    assert not alerts.mail_due(huey.storage, firing, settings.alert_mail_interval, now + 60)
