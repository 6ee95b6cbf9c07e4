"""The flusher's alarm (qrq/queue/alarm.py): its sleeper wakes at the deadline last set,
not at one that was moved or cleared, and at once when woken. Each test runs on Linux's
timerfd and on the Event used elsewhere (simulated here by hiding timerfd)."""

import threading
import time

import pytest

from qrq.queue import alarm
from tests.conftest import wait_until


@pytest.fixture(params=["timerfd", "event"])
def make_alarm(request, monkeypatch):
    if request.param == "event":
        monkeypatch.setattr(alarm, "_LIBC", None)
    elif alarm._LIBC is None:
        pytest.fail("no timerfd on this Linux machine")

    def make():
        made = alarm.Alarm()
        assert (made._timer is not None) == (request.param == "timerfd")
        return made
    return make


class Sleeper:
    """A thread that waits on *an_alarm* again and again, and notes when each wait ended."""

    def __init__(self, an_alarm):
        self.alarm, self.woke, self.stop = an_alarm, [], False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop:
            self.alarm.wait()
            self.woke.append(time.monotonic())

    def close(self):
        self.stop = True
        self.alarm.wake()
        self.thread.join(5)


def test_the_sleeper_wakes_at_the_deadline_and_not_at_one_that_was_cleared(make_alarm):
    sleeper = Sleeper(make_alarm())
    try:
        start = time.monotonic()
        cleared, later = start + 0.05, start + 0.2
        sleeper.alarm.set(cleared)
        sleeper.alarm.set(None)
        sleeper.alarm.set(later)
        wait_until(lambda: sleeper.woke and sleeper.woke[-1] >= later,
                   message="the wake at the later deadline")
        assert not [t for t in sleeper.woke if cleared <= t < later], sleeper.woke
        # timerfd wakes the sleeper only then; the Event also as each deadline is set
        # (the sleeper then waits until the deadline it finds).
        if sleeper.alarm._timer is not None:
            assert len(sleeper.woke) == 1, sleeper.woke
    finally:
        sleeper.close()


def test_a_deadline_moved_earlier_wakes_the_sleeper_then(make_alarm):
    sleeper = Sleeper(make_alarm())
    try:
        sleeper.alarm.set(time.monotonic() + 600)
        soon = time.monotonic() + 0.05
        sleeper.alarm.set(soon)
        wait_until(lambda: sleeper.woke and sleeper.woke[-1] >= soon,
                   message="the wake at the earlier deadline")
    finally:
        sleeper.close()


def test_wake_ends_a_wait_with_no_deadline_at_once(make_alarm):
    sleeper = Sleeper(make_alarm())
    sleeper.close()
    assert not sleeper.thread.is_alive()
