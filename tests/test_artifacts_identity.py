"""Which artifact store the hosts share, on a real S3 server and PostgreSQL: hosts that
start together agree on one id, and a host on another store is still told."""

import threading

import pytest

from qrq.artifacts import identity
from qrq.artifacts.s3 import S3Store
from qrq.queue import first_record, huey
from tests.conftest import wait_until
from tests.s3 import aws_env, s3_bucket, s3_server  # noqa: F401 (fixtures)

pytestmark = pytest.mark.postgres_only("hosts sharing one database")


class Host(S3Store):
    """One host's view of the store; *barrier* holds its first read of the marker until
    the other host has read it too, and *after_record* holds its writes until the
    database has a record: the order in which two starting hosts could lose the race."""

    def __init__(self, server, bucket, prefix, tmp_path, barrier=None, after_record=False):
        super().__init__(bucket, prefix, staging=tmp_path / prefix,
                         endpoint_url=server.endpoint)
        self.barrier, self.after_record = barrier, after_record

    def open(self, name):
        try:
            return super().open(name)
        finally:
            if self.barrier is not None:
                barrier, self.barrier = self.barrier, None
                barrier.wait(timeout=30)

    def write(self, name):
        if self.after_record:
            wait_until(lambda: first_record.read(huey.storage, "artifact_store", ("store_id",)),
                       message="the other host's record")
        return super().write(name)


def _marker(host):
    return identity._read_marker(host)


def test_hosts_starting_together_agree_on_one_id(settings, s3_server, s3_bucket, tmp_path):
    # Both hosts find no marker and no record; one then writes only once the other has
    # recorded its id. Before the fix, the store's marker was the later write and the
    # database's id the first record: an error at every start of every host.
    both = threading.Barrier(2)
    first = Host(s3_server, s3_bucket, "art", tmp_path / "a", barrier=both)
    second = Host(s3_server, s3_bucket, "art", tmp_path / "b", barrier=both,
                  after_record=True)
    said = {}

    def start(host):
        said[host] = identity.check_shared(huey.storage, host)

    threads = [threading.Thread(target=start, args=(host,)) for host in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert said == {first: None, second: None}
    recorded = first_record.read(huey.storage, "artifact_store", ("store_id",))["store_id"]
    assert _marker(first) == recorded
    # Every later start agrees as well.
    again = Host(s3_server, s3_bucket, "art", tmp_path / "c")
    assert identity.check_shared(huey.storage, again) is None


def test_a_host_on_another_store_is_still_told(settings, s3_server, s3_bucket, tmp_path):
    shared = Host(s3_server, s3_bucket, "art", tmp_path)
    assert identity.check_shared(huey.storage, shared) is None
    recorded = _marker(shared)

    # Another prefix: no marker there, so its outputs are not where the others look.
    other = Host(s3_server, s3_bucket, "elsewhere", tmp_path)
    reason = identity.check_shared(huey.storage, other)
    assert "is not the one the other hosts use" in reason and "missing here" in reason
    assert _marker(other) is None  # not made to look like the shared one

    # The same name, but a marker the database never recorded (another S3 endpoint, or
    # an older start's leftover): told which id to put there if it is the same store.
    with shared.write(identity.MARKER) as tmp:
        tmp.write_text("0" * 32)
    reason = identity.check_shared(huey.storage, shared)
    assert reason.count("s3://") == 2, reason  # the location, and the marker to set
    assert f"{identity.MARKER} holds 0000" in reason and recorded in reason
    assert _marker(shared) == "0" * 32


def test_a_first_host_that_cannot_write_the_marker_leaves_no_record(
        settings, s3_server, s3_bucket, tmp_path):
    # Its uploads are staged under a path that is a file: the marker's write fails after
    # the id was recorded, so the record goes too (kept, it would name a marker no store
    # holds), and the next host to start settles it.
    (tmp_path / "blocked").mkdir()
    (tmp_path / "blocked" / "art").write_text("not a directory")
    blocked = Host(s3_server, s3_bucket, "art", tmp_path / "blocked")
    assert identity.check_shared(huey.storage, blocked) is None  # reported elsewhere
    assert first_record.read(huey.storage, "artifact_store", ("store_id",)) is None
    assert _marker(blocked) is None
    working = Host(s3_server, s3_bucket, "art", tmp_path)
    assert identity.check_shared(huey.storage, working) is None
    assert identity.check_shared(huey.storage, blocked) is None
