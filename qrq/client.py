"""A small Python client of the qrq API, on the standard library only (no dependency).

    from qrq.client import Client

    api = Client("http://127.0.0.1:8000", token)
    job = api.submit_pdf(1, {"copies": 10})
    done = api.wait(job["job_id"], timeout=300)   # long-polls, no busy loop
    api.download(job["job_id"], "cards.pdf")

Every API error becomes an :class:`ApiError` subclass chosen by its HTTP status,
carrying the error body's ``code``, ``message`` and ``field``.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urljoin

LONG_POLL_SECONDS = 60  # the server's most for ?wait=
_UNSET: Any = object()


class ApiError(Exception):
    """The API answered an error: ``status``, ``code``, ``message``, ``field``."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None,
                 body: dict | None = None):
        super().__init__(f"{status} {code}: {message}" + (f" ({field})" if field else ""))
        self.status, self.code, self.message, self.field = status, code, message, field
        self.body = body or {}


class BadRequest(ApiError):
    """400: the request is malformed."""


class Unauthorized(ApiError):
    """401: no token, or a wrong one."""


class Forbidden(ApiError):
    """403: not allowed to you."""


class NotFound(ApiError):
    """404: no such thing, or not yours."""


class Conflict(ApiError):
    """409: not in a state that allows this."""


class JobNotFinished(Conflict):
    """409 on a download: the job has not finished; ``job_status`` says where it is."""

    @property
    def job_status(self) -> str | None:
        return self.body.get("error", {}).get("job_status")


class PayloadTooLarge(ApiError):
    """413: the request is too large."""


class ValidationError(ApiError):
    """422: a field has an invalid value (``field`` names it)."""


class TooManyRequests(ApiError):
    """429: too many of your jobs are unfinished."""


class ServerError(ApiError):
    """5xx: the server failed (503: a full disk, try later)."""


class WaitTimeout(TimeoutError):
    """:meth:`Client.wait` gave up; ``job`` is the last status read (the job goes on)."""

    def __init__(self, job: dict):
        super().__init__(f"job {job.get('job_id')} is still {job.get('status')}")
        self.job = job


_BY_STATUS = {400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound,
              409: Conflict, 413: PayloadTooLarge, 422: ValidationError,
              429: TooManyRequests}
ENDED = ("finished", "failed", "canceled", "expired")


def error_from(status: int, raw: bytes) -> ApiError:
    """The typed error of an error answer (any body: a proxy's HTML page too)."""
    try:
        body = json.loads(raw)
        error = body["error"]
        code, message, field = error["code"], error["message"], error.get("field")
    except (ValueError, KeyError, TypeError):
        body, code, message, field = {}, "http_error", raw[:200].decode(errors="replace"), None
    kind = ServerError if status >= 500 else _BY_STATUS.get(status, ApiError)
    if code == "job_not_finished":
        kind = JobNotFinished
    return kind(status, code, message, field, body)


def _seconds(retry_after: str | None, default: float = 1.0) -> float:
    try:
        return max(0.1, min(float(retry_after), 60.0))
    except (TypeError, ValueError):
        return default


class Client:
    """The qrq API at *base_url*, as the user whose API *token* is given."""

    def __init__(self, base_url: str, token: str, timeout: float = 30.0):
        self.base_url = base_url.rstrip("/") + "/"
        self.token = token
        self.timeout = timeout

    def _request(self, method: str, path: str, body: Any = None, *,
                 params: dict[str, Any] | None = None, timeout: float | None = None,
                 headers: dict[str, str] | None = None) -> tuple[int, Any, bytes]:
        url = urljoin(self.base_url, path.lstrip("/"))
        if params:
            url += ("&" if "?" in url else "?") + urlencode(
                {k: v for k, v in params.items() if v is not None})
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method, headers={
            "Authorization": f"Bearer {self.token}", "Accept": "application/json",
            **({"Content-Type": "application/json"} if data is not None else {}),
            **(headers or {})})
        try:
            with urllib.request.urlopen(request, timeout=timeout or self.timeout) as answer:
                return answer.status, answer.headers, answer.read()
        except urllib.error.HTTPError as exc:
            with exc:
                raise error_from(exc.code, exc.read()) from None

    def _json(self, method: str, path: str, body: Any = None, **kwargs) -> Any:
        return json.loads(self._request(method, path, body, **kwargs)[2])

    # -- jobs ---------------------------------------------------------------------------

    def submit_pdf(self, template_id: int, options: dict | None = None, *,
                   callback_url: str | None = _UNSET,
                   idempotency_key: str | None = None) -> dict:
        """Queue a PDF of a template's cards; the 202 answer (``job_id``, ``status_url``)."""
        body: dict[str, Any] = {"template_id": template_id, "options": options or {}}
        if callback_url is not _UNSET:
            body["callback_url"] = callback_url
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return self._json("POST", "/api/generate-qr-pdf", body, headers=headers)

    def submit_batch(self, items: list[dict] | None = None, *,
                     template_ids: list[int] | None = None, options: dict | None = None,
                     callback_url: str | None = _UNSET,
                     idempotency_key: str | None = None) -> dict:
        """Queue a batch of *items* (or of whole *template_ids*); the 202 answer
        (``batch_job_id``, ``total_items``...)."""
        body: dict[str, Any] = {"items": items} if items is not None else {
            "template_ids": template_ids}
        if options:
            body["options"] = options
        if callback_url is not _UNSET:
            body["callback_url"] = callback_url
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return self._json("POST", "/api/batch/generate-qrs", body, headers=headers)

    def job(self, job_id: str) -> dict:
        """A job's status, progress, result and error."""
        return self._json("GET", f"/api/jobs/{job_id}")

    def wait(self, job_id: str, timeout: float = 300.0) -> dict:
        """The job once it has ended (any final status: check ``status``).

        Long-polls (``?wait=``), so the server answers at each status change.
        :raises WaitTimeout: not ended after *timeout* seconds (the job goes on).
        """
        deadline = time.monotonic() + timeout
        seen = None
        while True:
            left = deadline - time.monotonic()
            wait = max(0, min(LONG_POLL_SECONDS, int(left)))
            asked = time.monotonic()
            _, headers, raw = self._request("GET", f"/api/jobs/{job_id}",
                                            params={"wait": wait or None},
                                            timeout=wait + self.timeout)
            job = json.loads(raw)
            if job["status"] in ENDED:
                return job
            left = deadline - time.monotonic()
            if left <= 0:
                raise WaitTimeout(job)
            early = time.monotonic() - asked < wait / 2
            if wait == 0 or (early and job["status"] == seen):
                # Answered early without a change (a busy server does not hold
                # waiters): wait as told rather than ask again at once.
                time.sleep(min(left, _seconds(headers.get("Retry-After"))))
            seen = job["status"]

    def cancel(self, job_id: str) -> dict:
        return self._json("DELETE", f"/api/jobs/{job_id}")

    def iter_jobs(self, *, status: str | None = None, job_type: str | None = None,
                  limit: int = 100) -> Iterator[dict]:
        """Your jobs, newest first, every page."""
        yield from self._pages("/api/jobs", "jobs",
                               {"status": status, "type": job_type, "limit": limit})

    # -- outputs ------------------------------------------------------------------------

    def download(self, job_id: str, dest: str | Path | None = None, *,
                 kind: str | None = None) -> bytes | Path:
        """A finished job's file (a batch's: *kind* ``pdf`` or ``zip``); written to
        *dest* if given (returns the path), else returned as bytes.

        :raises JobNotFinished: the job has not finished (``job_status`` says where).
        """
        path = (f"/api/batch/{job_id}/download/{kind}" if kind
                else f"/api/jobs/{job_id}/download")
        data = self._request("GET", path, timeout=max(self.timeout, 120))[2]
        if dest is None:
            return data
        Path(dest).write_bytes(data)
        return Path(dest)

    def iter_items(self, batch_id: str, *, status: str | None = None,
                   limit: int = 500) -> Iterator[dict]:
        """A batch's items in order (``status``: ok, failed or pending), every page."""
        yield from self._pages(f"/api/batch/{batch_id}/items", "items",
                               {"status": status, "limit": limit})

    def _pages(self, path: str, key: str, params: dict[str, Any]) -> Iterator[dict]:
        url: str | None = path
        first = True
        while url:
            body = self._json("GET", url, params=params if first else None)
            yield from body[key]
            url, first = body.get("next"), False
