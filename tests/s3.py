"""A real S3 API server for the tests: moto's standalone server, a subprocess on
127.0.0.1 at a free port, spoken to over HTTP by boto3 and urllib.

Test modules import the fixtures from here (pytest finds fixtures in a module's
namespace): ``s3_server`` (one per session), ``s3_bucket`` (a fresh bucket per test,
with boto3's credentials in the environment) and ``store_settings``, parametrized
over both artifact stores.
"""

import dataclasses
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import boto3
import pytest

from qrq.queue import huey
from tests.conftest import free_port, wait_until

# boto3's standard chain reads these; nothing from the machine's ~/.aws is used.
AWS_ENV = {"AWS_ACCESS_KEY_ID": "qrq-test", "AWS_SECRET_ACCESS_KEY": "qrq-test-secret",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": "/nonexistent",
           "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent", "AWS_EC2_METADATA_DISABLED": "true"}


class S3Server:
    """``moto_server`` on *address* (127.0.0.1, or a test host's link); :meth:`stop`
    makes the store unreachable."""

    def __init__(self, log: Path, address: str = "127.0.0.1"):
        self.address = address
        self.port = free_port()
        self.log = log
        self.proc = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.address}:{self.port}"

    def start(self) -> "S3Server":
        command = [str(Path(sys.executable).parent / "moto_server"), "-H", self.address,
                   "-p", str(self.port)]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                         env={**os.environ, **AWS_ENV})
        wait_until(self._listening, timeout=60, message="moto_server to listen")
        return self

    def _listening(self) -> bool:
        assert self.proc.poll() is None, self.log.read_text(errors="replace")
        with socket.socket() as sock:
            return sock.connect_ex((self.address, self.port)) == 0

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)

    def client(self):
        return boto3.session.Session(
            aws_access_key_id=AWS_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=AWS_ENV["AWS_SECRET_ACCESS_KEY"],
            region_name="us-east-1").client("s3", endpoint_url=self.endpoint)

    def make_bucket(self) -> str:
        name = f"qrq-{uuid.uuid4().hex[:16]}"
        self.client().create_bucket(Bucket=name)
        return name


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    server = S3Server(tmp_path_factory.mktemp("moto") / "moto.log").start()
    yield server
    server.stop()


@pytest.fixture
def aws_env(monkeypatch):
    for name, value in AWS_ENV.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def s3_bucket(s3_server, aws_env):
    return s3_server.make_bucket()


def use_s3(settings, monkeypatch, server: S3Server, bucket: str, **more):
    """*settings* with the artifact store in *bucket* (under ``artifacts/``), also in the
    environment (for a consumer subprocess), and the queue re-opened with them."""
    values = {"artifact_store": f"s3://{bucket}/artifacts", "s3_endpoint_url": server.endpoint,
              **more}
    for name, value in values.items():
        monkeypatch.setenv(f"QRQ_{name.upper()}", str(value))
    changed = dataclasses.replace(settings, **values)
    huey.init(changed)
    return changed


@pytest.fixture(params=["directory", "s3"])
def store_settings(request, settings, monkeypatch):
    """The test's settings on each artifact store in turn: the default directory, then a
    fresh bucket on the S3 server."""
    if request.param == "directory":
        return settings
    server = request.getfixturevalue("s3_server")
    return use_s3(settings, monkeypatch, server, request.getfixturevalue("s3_bucket"))
