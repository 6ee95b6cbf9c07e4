"""Artifacts as objects in S3-compatible storage (AWS S3, MinIO, R2, ...), with boto3.

A write renders into a local staging file and uploads it to the final key only once
it is complete: an S3 PUT (and the completion of a multipart upload, which boto3's
``upload_file`` uses for large files) is atomic, so no reader ever sees half an
object. Credentials come from boto3's standard chain (environment, shared files, an
instance role), never from qrq's settings or database.
"""

from __future__ import annotations

import contextlib
import io
import mimetypes
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import boto3
from boto3.exceptions import S3UploadFailedError
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from qrq.artifacts.store import ArtifactInfo, ArtifactStore, check_name, unavailable
from qrq.errors import StoreUnavailable

_MISSING = {"404", "NoSuchKey", "NotFound"}
_DELETE_BATCH = 1000  # the most keys one DeleteObjects call takes
_STAGED = ".upload"


def _reason(exc: Exception) -> str:
    """botocore's error in one line, without the request's details."""
    if isinstance(exc, NoCredentialsError):
        return ("no credentials (boto3's standard chain: AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, ~/.aws/credentials, or an instance role)")
    if isinstance(exc, S3UploadFailedError):  # boto3 wraps the error it met (not "from")
        exc = exc.__cause__ or exc.__context__ or exc
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', '?')}: {error.get('Message') or 'refused'}"
    return str(exc) or type(exc).__name__


class S3Store(ArtifactStore):
    """Artifacts under *prefix* in *bucket*; uploads staged in the local *staging*
    directory; *endpoint_url* for a store other than AWS (path-style addressing)."""

    presigns = True

    def __init__(self, bucket: str, prefix: str, *, staging: Path,
                 endpoint_url: str = "") -> None:
        self.bucket, self.prefix, self.staging = bucket, prefix.strip("/"), Path(staging)
        self.location = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        config = Config(
            signature_version="s3v4", connect_timeout=5, read_timeout=60,
            retries={"mode": "standard", "max_attempts": 3},
            # Most S3-compatible servers have no per-bucket DNS names.
            s3={"addressing_style": "path"} if endpoint_url else None,
            # Checksums only where S3 requires them: many S3-compatible servers refuse
            # the newer default ones.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required")
        # A session of its own: boto3's default session is not safe to share between
        # threads; a client is.
        self.client = boto3.session.Session().client(
            "s3", endpoint_url=endpoint_url or None, config=config)

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def _unavailable(self, action: str, exc: Exception) -> StoreUnavailable:
        return unavailable(f"the artifact store {self.location} could not {action}: "
                           f"{_reason(exc)}")

    @contextlib.contextmanager
    def write(self, name: str) -> Iterator[Path]:
        check_name(name)
        self.staging.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=_STAGED, dir=self.staging)
        os.close(fd)
        tmp = Path(tmp)
        try:
            yield tmp
            content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
            try:
                self.client.upload_file(str(tmp), self.bucket, self._key(name),
                                        ExtraArgs={"ContentType": content_type})
            except (BotoCoreError, ClientError, S3UploadFailedError) as exc:
                raise self._unavailable(f"store {name}", exc) from exc
        finally:
            tmp.unlink(missing_ok=True)

    def _head(self, name: str) -> dict | None:
        try:
            return self.client.head_object(Bucket=self.bucket, Key=self._key(check_name(name)))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in _MISSING:
                raise self._unavailable(f"read {name}", exc) from exc
        except BotoCoreError as exc:
            raise self._unavailable(f"read {name}", exc) from exc
        self.check()  # a missing bucket answers a HEAD with 404 too
        return None

    def stat(self, name: str) -> ArtifactInfo | None:
        head = self._head(name)
        if head is None:
            return None
        return ArtifactInfo(name, head["ContentLength"], head["LastModified"].timestamp(),
                            head["ETag"].strip('"'))

    def open(self, name: str) -> tuple[BinaryIO, ArtifactInfo]:
        info = self.stat(name)
        if info is None:
            raise FileNotFoundError(f"no artifact {name}")
        return ObjectReader(self, name, info), info

    def get(self, name: str, start: int, etag: str):
        """The body of *name* from byte *start* on, if it is still the *etag* version."""
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(name),
                                          Range=f"bytes={start}-", IfMatch=f'"{etag}"')["Body"]
        except (BotoCoreError, ClientError) as exc:
            raise self._unavailable(f"read {name}", exc) from exc

    def delete(self, names: Iterable[str]) -> None:
        keys = [{"Key": self._key(check_name(name))} for name in names]
        for start in range(0, len(keys), _DELETE_BATCH):
            try:
                answer = self.client.delete_objects(Bucket=self.bucket, Delete={
                    "Objects": keys[start:start + _DELETE_BATCH], "Quiet": True})
            except (BotoCoreError, ClientError) as exc:
                raise self._unavailable("delete", exc) from exc
            if answer.get("Errors"):
                first = answer["Errors"][0]
                raise unavailable(f"the artifact store {self.location} could not delete "
                                  f"{first.get('Key')}: {first.get('Code')}: "
                                  f"{first.get('Message')}")

    def list(self, prefix: str = "") -> Iterator[ArtifactInfo]:
        base = self._key("")
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=base + check_name(prefix, prefix=True))
        try:
            for page in pages:
                for item in page.get("Contents", ()):
                    name = item["Key"][len(base):]
                    if name and "/" not in name and not name.startswith("."):
                        yield ArtifactInfo(name, item["Size"], item["LastModified"].timestamp(),
                                           item["ETag"].strip('"'))
        except (BotoCoreError, ClientError) as exc:
            raise self._unavailable("list", exc) from exc

    def sweep(self, before: float) -> int:
        """Staging files of writes that died, and multipart uploads never completed
        (S3 keeps, and bills, their parts until aborted)."""
        swept = 0
        for path in self.staging.glob(f".*{_STAGED}"):
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_mtime < before:
                    path.unlink()
                    swept += 1
        pages = self.client.get_paginator("list_multipart_uploads").paginate(
            Bucket=self.bucket, Prefix=self._key(""))
        try:
            for page in pages:
                for upload in page.get("Uploads", ()):
                    if upload["Initiated"].timestamp() < before:
                        self.client.abort_multipart_upload(
                            Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"])
                        swept += 1
        except (BotoCoreError, ClientError) as exc:
            raise self._unavailable("list unfinished uploads", exc) from exc
        return swept

    def check(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code in ("404", "NoSuchBucket", "NotFound"):
                raise unavailable(f"the artifact store {self.location} is missing: no "
                                  f"bucket {self.bucket}") from exc
            raise self._unavailable("be reached", exc) from exc
        except BotoCoreError as exc:
            raise self._unavailable("be reached", exc) from exc

    def describe(self, name: str) -> str:
        return f"s3://{self.bucket}/{self._key(check_name(name))}"

    def url(self, name: str, expires: int, *, download_name: str, content_type: str,
            attachment: bool = False) -> str:
        # The names are ASCII (job ids), so a plain quoted filename is enough.
        disposition = f'{"attachment" if attachment else "inline"}; filename="{download_name}"'
        return self.client.generate_presigned_url("get_object", ExpiresIn=expires, Params={
            "Bucket": self.bucket, "Key": self._key(check_name(name)),
            "ResponseContentType": content_type, "ResponseContentDisposition": disposition})


class ObjectReader(io.RawIOBase):
    """One object as a seekable binary file: a ranged GET from the current position on
    the first read after a seek, so a download resumed at byte N fetches from N."""

    def __init__(self, store: S3Store, name: str, info: ArtifactInfo) -> None:
        super().__init__()
        self.store, self.name, self.info = store, name, info
        self.position = 0
        self.body = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.info.size}
        target = max(0, base[whence] + offset)
        if target != self.position:
            self._drop_body()
            self.position = target
        return self.position

    def readinto(self, buffer) -> int:
        if self.position >= self.info.size:
            return 0
        if self.body is None:
            self.body = self.store.get(self.name, self.position, self.info.etag)
        data = self.body.read(len(buffer))
        buffer[:len(data)] = data
        self.position += len(data)
        return len(data)

    def _drop_body(self) -> None:
        if self.body is not None:
            self.body.close()
            self.body = None

    def close(self) -> None:
        self._drop_body()
        super().close()
