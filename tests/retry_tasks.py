"""A task that fails its first attempts and then succeeds, loaded into a real consumer
through ``QRQ_TASK_MODULES=tests.retry_tasks`` (tests/test_attempts.py). It counts its
attempts from its own job record, so it behaves the same in any process."""

from qrq.errors import ValidationError
from qrq.queue import huey, job_task, jobs, progress


@job_task("maintenance", name="test.fails_then_succeeds", retries=3, retry_delay=0.05)
def fails_then_succeeds(failures: int, task=None) -> dict:
    """Raise on attempts 1..*failures*, succeed on the next."""
    attempt = jobs.get(huey.storage, task.id)["attempts"]
    progress(task, 50, f"attempt {attempt}")
    if attempt <= failures:
        raise RuntimeError(f"attempt {attempt} failed on purpose")
    return {"attempt": attempt, "bytes": 1536}


@job_task("maintenance", name="test.fails_on_its_input", retries=3, retry_delay=0.05)
def fails_on_its_input(value: str, task=None) -> dict:
    """Fail as a task fails on input it cannot use: a ValidationError (no retries)."""
    raise ValidationError(f"cannot print {value!r}", field="title")
