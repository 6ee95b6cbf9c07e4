"""The artifact store interface, on each store: the data directory and a real S3 API
server (moto's), with boto3 for uploads and urllib for presigned URLs."""

import dataclasses
import os
import time
import urllib.request

import pytest

from qrq.artifacts import DirectoryStore, open_store
from qrq.config import SettingsError, load_settings
from qrq.errors import StoreUnavailable
from tests.s3 import (  # noqa: F401 (fixtures)
    S3Server,
    aws_env,
    s3_bucket,
    s3_server,
    store_settings,
    use_s3,
)

NAME = "0badc0de-0000-4000-8000-000000000000.pdf"


def leftovers(settings):
    """Temporary files a store left in the data directory (staging or its own)."""
    folder = settings.artifacts_dir
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) \
        if folder.is_dir() else []


def test_a_write_is_published_whole_only_when_its_block_ends(store_settings):
    store = open_store(store_settings)
    with store.write(NAME) as tmp:
        tmp.write_bytes(b"%PDF-1.4 half")
        assert store.stat(NAME) is None and list(store.list()) == []
        tmp.write_bytes(b"%PDF-1.4 whole file")
    info = store.stat(NAME)
    assert info.name == NAME and info.size == 19 and info.etag
    assert [found.name for found in store.list()] == [NAME]
    file, opened = store.open(NAME)
    with file:
        assert file.read() == b"%PDF-1.4 whole file"
    assert opened.size == 19
    assert leftovers(store_settings) == []


def test_a_failed_write_publishes_nothing_and_leaves_nothing(store_settings):
    store = open_store(store_settings)
    with store.write(NAME) as tmp:
        tmp.write_bytes(b"old")
    with pytest.raises(RuntimeError), store.write(NAME) as tmp:
        tmp.write_bytes(b"new, but the render failed")
        raise RuntimeError("render failed")
    file, _ = store.open(NAME)
    with file:
        assert file.read() == b"old"
    assert leftovers(store_settings) == []


def test_a_rewrite_replaces_the_whole_file(store_settings):
    store = open_store(store_settings)
    with store.write(NAME) as tmp:
        tmp.write_bytes(b"a" * 1000)
    first = store.stat(NAME)
    with store.write(NAME) as tmp:
        tmp.write_bytes(b"b" * 10)
    file, info = store.open(NAME)
    with file:
        assert file.read() == b"b" * 10
    assert info.size == 10 and info.etag != first.etag


def test_list_delete_and_what_is_missing(store_settings):
    store = open_store(store_settings)
    names = [f"{NAME[:36]}.pdf", f"{NAME[:36]}.zip", "1badc0de-0000-4000-8000-000000000000.pdf"]
    for name in names:
        with store.write(name) as tmp:
            tmp.write_bytes(name.encode())
    assert sorted(f.name for f in store.list(NAME[:36])) == names[:2]
    assert sorted(f.name for f in store.list()) == sorted(names)
    store.delete([names[0], "2badc0de-0000-4000-8000-000000000000.pdf"])  # absent: no error
    assert store.stat(names[0]) is None
    with pytest.raises(FileNotFoundError):
        store.open(names[0])
    assert sorted(f.name for f in store.list()) == sorted(names[1:])
    store.delete([])
    with pytest.raises(ValueError, match="not an artifact name"):
        store.stat("../app.db")


def test_reads_seek_and_resume_where_asked(store_settings):
    store = open_store(store_settings)
    data = bytes(range(256)) * 40
    with store.write(NAME) as tmp:
        tmp.write_bytes(data)
    file, _ = store.open(NAME)
    with file:
        assert file.read(10) == data[:10]
        file.seek(5000)
        assert file.tell() == 5000 and file.read(100) == data[5000:5100]
        file.seek(-6, os.SEEK_END)
        assert file.read() == data[-6:]


def test_the_directory_store_refuses_a_symlink_and_a_fifo(settings, tmp_path):
    store = open_store(settings)
    secret = tmp_path / "secret"
    secret.write_bytes(b"not yours")
    (settings.artifacts_dir / NAME).symlink_to(secret)
    os.mkfifo(settings.artifacts_dir / "3badc0de-0000-4000-8000-000000000000.pdf")
    with pytest.raises(FileNotFoundError):
        store.open(NAME)
    with pytest.raises(FileNotFoundError):
        store.open("3badc0de-0000-4000-8000-000000000000.pdf")
    assert store.stat(NAME) is None and list(store.list()) == []


def test_sweep_removes_what_dead_writes_left(store_settings, request):
    store = open_store(store_settings)
    store_settings.artifacts_dir.mkdir(parents=True, exist_ok=True)
    left = store_settings.artifacts_dir / f".{NAME}.12345.deadbeef.tmp"
    left.write_bytes(b"half")
    staged = store_settings.artifacts_dir / f".{NAME}.x1y2.upload"
    staged.write_bytes(b"half")
    assert store.sweep(time.time() - 3600) == 0  # young: a write may still be running
    if store.presigns:  # a multipart upload whose writer died keeps its parts in S3
        client = request.getfixturevalue("s3_server").client()
        client.create_multipart_upload(Bucket=store.bucket, Key=f"artifacts/{NAME}")
    assert store.sweep(time.time() + 3600) == (2 if store.presigns else 1)
    assert not (staged if store.presigns else left).exists()
    if store.presigns:
        assert not client.list_multipart_uploads(Bucket=store.bucket).get("Uploads")


def test_a_large_file_goes_up_in_parts_and_comes_back_whole(settings, monkeypatch,
                                                            s3_server, s3_bucket):
    store = open_store(use_s3(settings, monkeypatch, s3_server, s3_bucket))
    data = os.urandom(9 * 1024 * 1024)  # above boto3's 8 MB multipart threshold
    with store.write(NAME) as tmp:
        tmp.write_bytes(data)
    assert "-" in store.stat(NAME).etag  # a multipart object's ETag: <md5>-<parts>
    url = store.url(NAME, 60, download_name="cards.pdf", content_type="application/pdf")
    with urllib.request.urlopen(url) as response:
        assert response.read() == data
        assert response.headers["Content-Type"] == "application/pdf"
        assert 'filename="cards.pdf"' in response.headers["Content-Disposition"]


# -- a missing or unreachable store ---------------------------------------------------

def test_a_named_directory_is_never_created_and_its_absence_is_clear(tmp_path, monkeypatch):
    monkeypatch.setenv("QRQ_DATA_DIR", str(tmp_path / "data"))
    settings = load_settings(artifact_store=str(tmp_path / "nfs" / "artifacts"))
    settings.ensure_dirs()
    assert not settings.artifacts_dir.exists()
    store = open_store(settings)
    for attempt in (store.check, lambda: store.write(NAME).__enter__(), store.list().__next__,
                    lambda: store.stat(NAME), lambda: store.open(NAME),
                    lambda: store.delete([NAME])):
        with pytest.raises(StoreUnavailable, match="does not exist .*shared mount"):
            attempt()
    settings.artifacts_dir.mkdir(parents=True)
    store.check()
    assert store.stat(NAME) is None


def test_a_missing_bucket_and_a_stopped_server_are_unavailable(settings, monkeypatch, tmp_path,
                                                               s3_server, aws_env):
    store = open_store(use_s3(settings, monkeypatch, s3_server, "qrq-no-such-bucket"))
    with pytest.raises(StoreUnavailable, match="missing: no bucket qrq-no-such-bucket"):
        store.check()
    with pytest.raises(StoreUnavailable, match="no bucket"):
        store.stat(NAME)  # a HEAD of a missing bucket is a 404 too: not "no such file"
    with pytest.raises(StoreUnavailable, match=f"could not store {NAME}: NoSuchBucket: "), \
            store.write(NAME) as tmp:
        tmp.write_bytes(b"%PDF-")
    server = S3Server(tmp_path / "moto.log").start()
    bucket = server.make_bucket()
    store = open_store(use_s3(settings, monkeypatch, server, bucket))
    with store.write(NAME) as tmp:
        tmp.write_bytes(b"%PDF-")
    server.stop()
    for attempt in (store.check, lambda: store.stat(NAME), lambda: store.list().__next__(),
                    lambda: store.delete([NAME])):
        with pytest.raises(StoreUnavailable, match=f"s3://{bucket}/artifacts could not"):
            attempt()
    with pytest.raises(StoreUnavailable, match=f"could not store {NAME}"), \
            store.write(NAME) as tmp:
        tmp.write_bytes(b"%PDF-")
    assert leftovers(settings) == []


@pytest.mark.parametrize("value, message", [
    ("s3://Bad_Bucket/x", "not an S3 bucket name"),
    ("s3://qrq/a//b", "may not hold empty"),
    ("s3://qrq/../b", "may not hold"),
    ("gs://qrq/cards", "expected a directory or s3://bucket/prefix"),
])
def test_a_bad_store_is_refused_at_load(tmp_path, value, message):
    with pytest.raises(SettingsError, match=f"QRQ_ARTIFACT_STORE='{value}'.*{message}"):
        load_settings({"QRQ_DATA_DIR": str(tmp_path), "QRQ_ARTIFACT_STORE": value})


def test_store_settings_are_read_and_checked(tmp_path):
    settings = load_settings({"QRQ_DATA_DIR": str(tmp_path),
                              "QRQ_ARTIFACT_STORE": "s3://qrq-cards/prod/artifacts/",
                              "QRQ_S3_ENDPOINT_URL": "http://minio.internal:9000",
                              "QRQ_S3_DOWNLOAD": "STREAM", "QRQ_S3_URL_EXPIRY": "60"})
    assert (settings.s3_download, settings.s3_url_expiry) == ("stream", 60)
    assert settings.artifacts_dir == tmp_path / "artifacts"  # where uploads are staged
    with pytest.raises(SettingsError, match="QRQ_S3_ENDPOINT_URL"):
        dataclasses.replace(settings, s3_endpoint_url="minio:9000")
    with pytest.raises(SettingsError, match="QRQ_S3_DOWNLOAD"):
        dataclasses.replace(settings, s3_download="proxy")
    relative = load_settings({"QRQ_DATA_DIR": str(tmp_path), "QRQ_ARTIFACT_STORE": "shared"})
    assert relative.artifacts_dir == tmp_path / "shared"


def test_render_pdf_is_atomic_through_the_directory_store(tmp_path):
    from qrq.cards.qr import A4_MM, CardSpec, render_pdf

    result = render_pdf(CardSpec(*A4_MM), ["x"], tmp_path / "out" / "cards.pdf")
    assert result.path.read_bytes().startswith(b"%PDF")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["cards.pdf"]
    assert isinstance(open_store(load_settings({"QRQ_DATA_DIR": str(tmp_path)})),
                      DirectoryStore)


@pytest.mark.postgres_only("hosts sharing one database")
def test_a_host_whose_store_is_not_the_others_is_told_at_start(settings, caplog, tmp_path):
    # Host A (the fixture's) starts first: its store gets the marker, the database its
    # id. Host B names a store of its own (its local <data>/artifacts): its downloads of
    # A's outputs would all be 404s, so its start says so; named alike, it is quiet.
    from qrq.artifacts import identity
    from qrq.queue import huey
    from qrq.web import create_app

    create_app({"SETTINGS": settings, "TESTING": True})
    assert open_store(settings).stat(identity.MARKER) is not None
    other = dataclasses.replace(settings, data_dir=tmp_path / "host-b")
    other.ensure_dirs()
    caplog.clear()
    create_app({"SETTINGS": other, "TESTING": True})
    said = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(said) == 1 and "is not the one the other hosts use" in said[0], said
    assert str(other.artifacts_dir) in said[0] and str(settings.artifacts_dir) in said[0]
    assert "missing here" in said[0]
    shared = dataclasses.replace(other, artifact_store=str(settings.artifacts_dir))
    caplog.clear()
    create_app({"SETTINGS": shared, "TESTING": True})
    assert [r for r in caplog.records if r.levelname == "ERROR"] == []
    # Retention's sweep of files no job owns keeps the marker, however old.
    from qrq.queue.retention import purge_stale
    purge_stale(huey.storage, open_store(settings), now=time.time() + 10 * 86400)
    assert open_store(settings).stat(identity.MARKER) is not None
