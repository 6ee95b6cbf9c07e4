"""huey's revoke API on qrq's jobs (qrq/queue/revocation.py): revoking a job cancels it
through its record, and a job's run reads no revoke keys; tasks without a job record
keep huey's own revocation."""

import pytest

from qrq.queue import huey, jobs, submit
from qrq.queue.qrq_huey import QrqHuey
from tests import retry_tasks


def kv_reads(monkeypatch) -> list:
    """Record each read of huey's kv table (revoke checks read it) from now on."""
    seen = []
    storage = type(huey.storage)
    for name in ("peek_many", "peek_data", "has_data_for_key"):
        original = getattr(storage, name)

        def spy(self, *args, _original=original, _name=name):
            seen.append(_name)
            return _original(self, *args)

        monkeypatch.setattr(storage, name, spy)
    return seen


def test_a_job_runs_without_reading_revoke_keys(settings, monkeypatch):
    job_id = submit(retry_tasks.fails_then_succeeds, 0, owner_id=None)
    seen = kv_reads(monkeypatch)
    task = huey.dequeue()
    huey.execute(task)
    assert jobs.get(huey.storage, job_id)["status"] == "finished"
    assert seen == []


def test_revoking_a_queued_job_cancels_it(settings):
    job_id = submit(retry_tasks.fails_then_succeeds, 0, owner_id=None)
    assert not huey.is_revoked(job_id)
    huey.revoke_by_id(job_id)
    assert jobs.get(huey.storage, job_id)["status"] == "canceled"
    assert huey.is_revoked(job_id)
    assert huey.dequeue() is None  # its row went with the cancel: nothing runs
    assert not huey.restore_by_id(job_id)  # a canceled job runs again through retry()
    assert huey.storage.sql("select count(*) from kv", results=True) == [(0,)]


def test_revoking_a_running_job_asks_it_to_stop(settings):
    job_id = submit(retry_tasks.fails_then_succeeds, 0, owner_id=None)
    task = huey.dequeue()
    huey.revoke(task)
    assert jobs.get(huey.storage, job_id)["cancel_requested"] == 1
    huey.execute(task)  # its progress call sees the cancel
    job = jobs.get(huey.storage, job_id)
    assert (job["status"], job["error"]) == ("canceled", "canceled while running")
    assert job["traceback"] is None  # someone's decision, not an error to debug


def test_a_job_type_is_not_revoked_as_a_class(settings):
    with pytest.raises(NotImplementedError, match="qrq jobs pause"):
        huey.revoke_all(retry_tasks.fails_then_succeeds)


def test_a_task_without_a_job_keeps_hueys_revocation(settings):
    plain = QrqHuey(settings, name="plain")
    ran = []

    @plain.task()
    def note(value):
        ran.append(value)

    try:
        skipped = note.s(1)
        plain.enqueue(skipped)
        plain.revoke(skipped)
        assert plain.is_revoked(skipped)
        note(2)
        while (task := plain.dequeue()) is not None:
            plain.execute(task)
        assert ran == [2]
        plain.revoke_all(note)  # a class without a job type: huey's key
        assert plain.is_revoked(note)
        assert plain.restore_all(note)
    finally:
        plain.storage.dispose()
