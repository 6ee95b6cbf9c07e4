"""qrq's one exception hierarchy.

Each error carries the HTTP status the web layer answers with and a stable
``code``; the class docstring is the default message. Every ``QrqError`` means
"the input is wrong", so a task that raises one fails at once, never retried,
unless it is also a ``TransientError`` (a database or the artifact store out of reach).
Library errors are translated into these where they arise.
"""

from __future__ import annotations


class QrqError(Exception):
    """Something is wrong with the request."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str | None = None, *, field: str | None = None):
        self.message = message or (self.__doc__ or "").strip()
        self.field = field
        super().__init__(self.message)

    def to_dict(self) -> dict:
        return {"status": self.status, "code": self.code, "message": shown(self.message),
                "field": shown(self.field)}


# Characters of a message or field name an error shows: one that echoes input (a path
# id of 200 KB, a body's key) is cut there, so an error stays small.
MAX_SHOWN = 300


def shown(text: str | None) -> str | None:
    return text if text is None or len(text) <= MAX_SHOWN else text[:MAX_SHOWN - 1] + "…"


class BadRequest(QrqError):
    """The request is malformed."""


class Unauthorized(QrqError):
    """A valid API token is required."""

    status = 401
    code = "unauthorized"


class Forbidden(QrqError):
    """You are not allowed to do this."""

    status = 403
    code = "forbidden"


class NotFound(QrqError):
    """Not found."""

    status = 404
    code = "not_found"


class Conflict(QrqError):
    """The resource is not in a state that allows this."""

    status = 409
    code = "conflict"


class JobNotFinished(Conflict):
    """The job has not finished, so it has no output to download."""

    code = "job_not_finished"

    def __init__(self, message: str | None = None, *, job_status: str):
        super().__init__(message)
        self.job_status = job_status

    def to_dict(self) -> dict:
        return {**super().to_dict(), "job_status": self.job_status}


class PayloadTooLarge(QrqError):
    """The request is too large."""

    status = 413
    code = "payload_too_large"


class ValidationError(QrqError):
    """A field has an invalid value."""

    status = 422
    code = "validation_error"


class TooManyJobs(QrqError):
    """Too many of your jobs are queued or running; wait for some to finish."""

    status = 429
    code = "too_many_jobs"
    # Seconds sent as Retry-After: a hint for clients that back off by it (a job of
    # yours ending is what frees a place; no one knows when).
    retry_after = 5


class TooManyAttempts(QrqError):
    """Too many failed log-ins or bad tokens from your address; wait and try again."""

    status = 429
    code = "too_many_attempts"

    def __init__(self, message: str | None = None, *, retry_after: int = 60):
        super().__init__(message)
        self.retry_after = retry_after  # seconds, sent as Retry-After


class TransientError(Exception):
    """A failure worth retrying (I/O, a locked database); not the caller's fault."""


class Unavailable(QrqError, TransientError):
    """A database is unavailable; try again later.

    A 503 for the web, and transient for a job, which is retried rather than failed at
    once (a queue database that went away for a moment, a deadlock it broke).
    """

    status = 503
    code = "unavailable"


class StorageFull(QrqError):
    """The disk holding qrq's data is full; try again once space has been freed."""

    status = 503
    code = "storage_full"


class StoreUnavailable(Unavailable):
    """The artifact store cannot be reached; try again later.

    The message names the store and the reason (for operators, the job's error
    and the log); API clients get the class's plain message.
    """

    code = "store_unavailable"

    def to_dict(self) -> dict:
        return {**super().to_dict(), "message": (self.__doc__ or "").splitlines()[0]}
