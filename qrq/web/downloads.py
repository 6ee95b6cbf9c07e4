"""Sending a job's output: only the artifact the job stored, as the job stored it.

Every download route goes through :func:`send_artifact`. From a directory store the
file is opened once, without following a symlink, and checked on that open
descriptor (a regular file whose size is the one the job recorded), so what is
checked is what is sent, with ranges and an ETag. From an S3 store the object is
checked the same way and the client is redirected to a short-lived presigned URL
(``QRQ_S3_DOWNLOAD=redirect``, so any web host serves any download without carrying
the bytes) or the object is streamed through the app (``stream``). A symlink or a
file changed after the job (truncated, appended, swapped) is refused as
unavailable, and the operator finds the reason in the log.
"""

from __future__ import annotations

import logging
import mimetypes

from flask import Response, current_app, redirect, request, send_file
from werkzeug.exceptions import PreconditionFailed, RequestedRangeNotSatisfiable

from qrq import batch
from qrq.artifacts import ArtifactInfo, ArtifactStore, open_store
from qrq.errors import JobNotFinished, NotFound
from qrq.queue import huey

logger = logging.getLogger("qrq.web")

BATCH_OUTPUTS = {"pdf": "application/pdf", "zip": "application/zip"}


def artifact_store() -> ArtifactStore:
    """This web process's artifact store."""
    return open_store(current_app.config["QRQ"])


def _check(info: ArtifactInfo | None, size: int | None, name: str, missing: str) -> None:
    if info is None:
        _not_in_store(name, missing)
    if size is not None and info.size != size:
        logger.warning("download of %s refused: %s bytes, the job recorded %s", name,
                       info.size, size)
        raise NotFound(missing)


def _not_in_store(name: str, missing: str) -> None:
    """:raises NotFound: *missing*; the operator learns where this host looked (a
    worker writing to another store looks the same to the client)."""
    logger.warning("download of %s: not in the artifact store %s (removed by retention, "
                   "or written to another store: every host must name the same "
                   "QRQ_ARTIFACT_STORE)", name, artifact_store().location)
    raise NotFound(missing)


def send_artifact(name: str, size: int | None, mimetype: str | None, download_name: str,
                  missing: str, as_attachment: bool = False) -> Response:
    """The artifact *name* as a download, if it is what the job stored: *size* bytes
    (None: not recorded). *mimetype* None guesses it from *download_name*.

    :raises NotFound: with *missing* as the message: no such artifact, a symlink, not
        a regular file, or a size other than the recorded one.
    :raises StoreUnavailable: the store is missing or cannot be reached (503).
    """
    settings = current_app.config["QRQ"]
    store = artifact_store()
    mimetype = mimetype or mimetypes.guess_type(download_name)[0] or "application/octet-stream"
    if store.presigns and settings.s3_download == "redirect":
        _check(store.stat(name), size, name, missing)
        response = redirect(store.url(name, settings.s3_url_expiry, download_name=download_name,
                                      content_type=mimetype, attachment=as_attachment))
        response.headers["Cache-Control"] = "no-store"  # the URL expires; never reuse it
        return response
    try:
        file, info = store.open(name)
    except FileNotFoundError:
        _not_in_store(name, missing)
    try:
        _check(info, size, name, missing)
    except NotFound:
        file.close()
        raise
    response = send_file(file, mimetype=mimetype, download_name=download_name, max_age=0,
                         as_attachment=as_attachment, conditional=False, etag=False)
    response.content_length = info.size
    response.last_modified = info.mtime
    response.set_etag(info.etag)
    try:
        response = response.make_conditional(request.environ, accept_ranges=True,
                                              complete_length=info.size)
    except RequestedRangeNotSatisfiable:  # a 416 in the error shape: the file stays unsent
        response.close()
        raise
    if response.status_code == 412:  # werkzeug's answer to If-Match keeps the file as body
        response.close()
        raise PreconditionFailed("If-Match names no ETag of this file")
    return response


def send_batch_output(job: dict, kind: str) -> Response:
    """A batch's combined PDF (``pdf``) or ZIP (``zip``) once written: when it has
    finished, or was canceled midway (the items done so far are kept, and their
    outputs written).

    :raises JobNotFinished: no outputs yet (queued, running, failed).
    """
    found = batch.get_batch(huey.storage, job["id"]) if job["type"] == "batch" else None
    job_id = job["id"]
    if found is None or kind not in BATCH_OUTPUTS:
        raise NotFound(f"batch {job_id} not found" if found is None else "download pdf or zip")
    if not (found["outputs"] or {}).get(kind):
        if job["status"] != "finished":
            then = ("it wrote none" if job["status"] in ("failed", "canceled", "expired")
                    else "it can be downloaded once it has finished")
            raise JobNotFinished(f"batch {job_id} is {job['status']}; as for its {kind}, "
                                 f"{then}", job_status=job["status"])
        raise NotFound(f"batch {job_id} has no {kind}")
    # The name comes from the validated job id, never from the request or the record.
    return send_artifact(f"{job_id}.{kind}", found["outputs"][kind].get("bytes"),
                         BATCH_OUTPUTS[kind], f"qrq-batch-{job_id}.{kind}",
                         f"the {kind} of batch {job_id} is no longer stored")
