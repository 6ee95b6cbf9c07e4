"""A small Python client of the qrq API, on the standard library only (no dependency).

    from qrq.client import Client

    api = Client("http://127.0.0.1:8000", token)
    job = api.submit_pdf(1, {"copies": 10})
    done = api.wait(job["job_id"], timeout=300)   # long-polls, no busy loop
    api.download(job["job_id"], "cards.pdf")

Every failure is an :class:`ApiError`: an error answer becomes the subclass chosen by
its HTTP status, carrying the error body's ``code``, ``message``, ``field`` and the
``Retry-After`` it gave; no usable answer (the server down, a timeout, an answer cut
short or not JSON) is a :class:`ConnectionFailed`. (A :meth:`Client.wait` that gives
up raises :class:`WaitTimeout`, a ``TimeoutError``: the job goes on.) The token goes
only to the API's own origin: a download redirected to the artifact store (a
presigned S3 URL) is fetched without it.
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urljoin, urlsplit

LONG_POLL_SECONDS = 60  # the server's most for ?wait=
_UNSET: Any = object()


class ApiError(Exception):
    """The API answered an error: ``status``, ``code``, ``message``, ``field``, and
    ``retry_after`` (seconds, from the answer's ``Retry-After``; None without one)."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None,
                 body: dict | None = None, retry_after: float | None = None):
        super().__init__(f"{status} {code}: {message}" + (f" ({field})" if field else ""))
        self.status, self.code, self.message, self.field = status, code, message, field
        self.body = body or {}
        self.retry_after = retry_after


class ConnectionFailed(ApiError):
    """No usable answer: ``code`` ``unreachable`` (no connection), ``timeout`` (no
    answer in time) or ``bad_answer`` (cut short, or not JSON); ``status`` is 0 unless
    an answer came."""


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
    """429: too many of your jobs are unfinished (``too_many_jobs``), or too many failed
    log-ins from your address (``too_many_attempts``); ``retry_after`` says when to
    try again."""


class ServerError(ApiError):
    """5xx: the server failed (503: a full disk or an unreachable database, try again
    after ``retry_after``)."""


class JobFailed(ApiError):
    """A job this call waited for ended without a result: ``job`` is its last status
    (``failed``, ``canceled`` or ``expired``, with its ``error``)."""

    def __init__(self, job: dict):
        super().__init__(0, f"job_{job.get('status')}",
                         f"job {job.get('job_id')} {job.get('status')}: {job.get('error')}",
                         body=job)
        self.job = job


class WaitTimeout(TimeoutError):
    """:meth:`Client.wait` gave up; ``job`` is the last status read (the job goes on),
    None when the server did not answer since (a restart that outlasted the wait)."""

    def __init__(self, job: dict | None, last_error: str = ""):
        said = (f"job {job.get('job_id')} is still {job.get('status')}" if job
                else "no status read")
        super().__init__(said + (f"; then {last_error}" if last_error else ""))
        self.job = job


_BY_STATUS = {400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound,
              409: Conflict, 413: PayloadTooLarge, 422: ValidationError,
              429: TooManyRequests}
ENDED = ("finished", "failed", "canceled", "expired")
# A server (or the load balancer before it) that is restarting, or too busy: wait.
RESTARTING = (502, 503, 504)


def error_from(status: int, raw: bytes, headers: Any = None) -> ApiError:
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
    given = headers.get("Retry-After") if headers is not None else None
    return kind(status, code, message, field, body,
                retry_after=_seconds(given, None) if given else None)


def _seconds(retry_after: Any, default: float | None = 1.0) -> float | None:
    try:
        return max(0.1, min(float(retry_after), 60.0))
    except (TypeError, ValueError):
        return default


def _id(value: str) -> str:
    """*value* as one path segment: an id holding ``/`` or ``..`` names no other route."""
    return quote(str(value), safe="").replace(".", "%2E")


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), \
        parts.port or {"http": 80, "https": 443}.get(parts.scheme)


class _TokenStaysHome(urllib.request.HTTPRedirectHandler):
    """Follows redirects (urllib's way) but keeps the token off other origins: a
    download may be sent on to the artifact store's presigned URL, which needs no token
    and must not see it (urllib copies every header to the new request)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and _origin(newurl) != _origin(req.full_url):
            new.remove_header("Authorization")
        return new


class Client:
    """The qrq API at *base_url*, as the user whose API *token* is given."""

    def __init__(self, base_url: str, token: str, timeout: float = 30.0):
        self.base_url = base_url.rstrip("/") + "/"
        self.token = token
        self.timeout = timeout
        self._opener = urllib.request.build_opener(_TokenStaysHome)

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
        seconds = timeout or self.timeout
        try:
            with self._opener.open(request, timeout=seconds) as answer:
                return answer.status, answer.headers, answer.read()
        except urllib.error.HTTPError as exc:
            with exc:
                try:
                    raw = exc.read()
                except (OSError, http.client.HTTPException):
                    raw = b""
                raise error_from(exc.code, raw, exc.headers) from None
        except TimeoutError:
            raise ConnectionFailed(0, "timeout", f"{method} {url}: no answer within "
                                   f"{seconds:g} s") from None
        except urllib.error.URLError as exc:
            code = "timeout" if isinstance(exc.reason, TimeoutError) else "unreachable"
            raise ConnectionFailed(0, code, f"{method} {url}: {exc.reason}") from None
        except (OSError, http.client.HTTPException) as exc:  # reset, cut short
            raise ConnectionFailed(0, "bad_answer", f"{method} {url}: the answer broke "
                                   f"off ({type(exc).__name__}: {exc})") from None

    def _json(self, method: str, path: str, body: Any = None, **kwargs) -> Any:
        return self._decode(*self._request(method, path, body, **kwargs), path)

    @staticmethod
    def _decode(status: int, headers: Any, raw: bytes, path: str) -> Any:
        try:
            return json.loads(raw)
        except ValueError:
            raise ConnectionFailed(status, "bad_answer", f"{path}: the answer is not "
                                   f"JSON: {raw[:80]!r}") from None

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
        return self._json("GET", f"/api/jobs/{_id(job_id)}")

    def wait(self, job_id: str, timeout: float = 300.0) -> dict:
        """The job once it has ended (any final status: check ``status``).

        Long-polls (``?wait=``), so the server answers at each status change. A 429,
        502, 503 or 504 answer is waited out (its ``Retry-After``), and so is a server
        that stops answering once reached (a restart), until *timeout*.
        :raises WaitTimeout: not ended after *timeout* seconds (the job goes on).
        """
        return self._wait(f"/api/jobs/{_id(job_id)}", timeout, long_poll=True)

    def _wait(self, path: str, timeout: float, long_poll: bool) -> dict:
        deadline = time.monotonic() + timeout
        seen = job = None
        reached = False  # any answer yet, even an error or one cut short
        while True:
            left = deadline - time.monotonic()
            wait = max(0, min(LONG_POLL_SECONDS, int(left))) if long_poll else 0
            asked = time.monotonic()
            try:
                # No request outlasts the deadline by more than a second.
                answer = self._request("GET", path, params={"wait": wait or None},
                                       timeout=max(1.0, min(wait + self.timeout, left + 1)))
            except (TooManyRequests, ServerError, ConnectionFailed) as exc:
                if isinstance(exc, ServerError) and exc.status not in RESTARTING or \
                        exc.code == "unreachable" and not reached:
                    raise  # a bug, or never reached (a wrong URL, say)
                reached = True
                left = deadline - time.monotonic()
                if left <= 0:
                    raise WaitTimeout(job, str(exc)) from exc
                time.sleep(min(left, exc.retry_after or 1.0))
                continue
            reached = True
            job = self._decode(*answer, path)
            if job["status"] in ENDED:
                return job
            left = deadline - time.monotonic()
            if left <= 0:
                raise WaitTimeout(job)
            early = time.monotonic() - asked < wait / 2
            if wait == 0 or (early and job["status"] == seen):
                # Answered early without a change (a busy server does not hold
                # waiters): wait as told rather than ask again at once.
                time.sleep(min(left, _seconds(answer[1].get("Retry-After"))))
            seen = job["status"]

    def cancel(self, job_id: str) -> dict:
        return self._json("DELETE", f"/api/jobs/{_id(job_id)}")

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
        path = (f"/api/batch/{_id(job_id)}/download/{kind}" if kind
                else f"/api/jobs/{_id(job_id)}/download")
        data = self._request("GET", path, timeout=max(self.timeout, 120))[2]
        if dest is None:
            return data
        Path(dest).write_bytes(data)
        return Path(dest)

    def batch(self, batch_id: str) -> dict:
        """A batch's counts, status, downloads and ``retry_job_ids``."""
        return self._json("GET", f"/api/batch/{_id(batch_id)}")

    def retry_failed(self, batch_id: str) -> dict:
        """Queue a batch's failed items again as a new batch; the 202 answer
        (``batch_job_id``, ``parent_job_id``, ``total_items``)."""
        return self._json("POST", f"/api/batch/{_id(batch_id)}/retry-failed")

    def iter_items(self, batch_id: str, *, status: str | None = None,
                   limit: int = 500) -> Iterator[dict]:
        """A batch's items in order (``status``: ok, failed or pending), every page."""
        yield from self._pages(f"/api/batch/{_id(batch_id)}/items", "items",
                               {"status": status, "limit": limit})

    # -- analytics ----------------------------------------------------------------------

    def analytics(self, timeout: float = 300.0, **params: Any) -> dict:
        """The time-based analytics report for *params* (``period``, ``from``, ``to``,
        ``tz``, ``domain``, ``template_id``, ``refresh``; ``from_`` for ``from``): the
        cached one, or the one the job computing it returns (followed at its
        ``status_url``, which any user may follow, until *timeout*).

        :raises JobFailed: the computation failed or was canceled.
        :raises WaitTimeout: still computing after *timeout* seconds.
        """
        if "from_" in params:
            params["from"] = params.pop("from_")
        status, headers, raw = self._request("GET", "/api/analytics/time-based",
                                             params=params)
        answer = self._decode(status, headers, raw, "/api/analytics/time-based")
        if status != 202:
            return answer
        job = self._wait(answer["status_url"], timeout, long_poll=False)
        if job["status"] != "finished":
            raise JobFailed(job)
        return job["result"]

    def _pages(self, path: str, key: str, params: dict[str, Any]) -> Iterator[dict]:
        url: str | None = path
        first = True
        while url:
            body = self._json("GET", url, params=params if first else None)
            yield from body[key]
            url, first = body.get("next"), False
