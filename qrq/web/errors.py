"""One JSON error shape for every failure, registered at app level.

Every error body is ``{"error": {"status", "code", "message", "field"}}``.
Handlers live on the app, not a blueprint, because a blueprint never sees
routing errors (an unknown URL, a wrong method).
"""

from __future__ import annotations

import errno
import logging
import sqlite3

from flask import Flask, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

from qrq import pg_errors
from qrq.errors import QrqError, StorageFull, Unavailable

logger = logging.getLogger("qrq.web")

# SQLite's message for SQLITE_FULL (a full disk, or a full temp store).
_SQLITE_FULL = "database or disk is full"
_DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}


def error_body(status: int, code: str, message: str, field: str | None = None) -> dict:
    return {"error": {"status": status, "code": code, "message": message, "field": field}}


def error_response(status: int, code: str, message: str, field: str | None = None):
    return jsonify(error_body(status, code, message, field)), status


def is_storage_full(exc: BaseException | None) -> bool:
    """Whether *exc*, or an error it was raised from, says the disk is full."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, StorageFull):
            return True
        if isinstance(exc, OSError) and exc.errno in _DISK_FULL_ERRNOS:
            return True
        if isinstance(exc, sqlite3.Error) and _SQLITE_FULL in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__  # peewee re-raises with the original as context
    return False


def _qrq_error_response(exc: QrqError):
    response = jsonify({"error": exc.to_dict()})
    if exc.status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="qrq"'
    if getattr(exc, "retry_after", None):
        response.headers["Retry-After"] = str(exc.retry_after)
    elif exc.status == 503:
        response.headers["Retry-After"] = "60"
    return response, exc.status


def _dashboard_page() -> bool:
    """Whether this request is a browser's for a dashboard page (not its JSON): its errors
    are pages too."""
    return (request.path.startswith("/admin/") and not request.path.endswith(".json")
            and request.accept_mimetypes.accept_html)


def init_app(app: Flask) -> None:
    @app.errorhandler(QrqError)
    def _qrq_error(exc: QrqError):
        return _qrq_error_response(exc)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        code = (exc.name or "error").lower().replace(" ", "_")
        if exc.code == 413:
            code = "payload_too_large"
        if _dashboard_page():  # e.g. an action's URL opened in the browser (a GET)
            error = QrqError(exc.description or exc.name)
            error.status, error.code = exc.code or 500, code
            return render_template("admin/error.html", error=error), error.status, [
                (name, value) for name, value in exc.get_headers()
                if name.lower() != "content-type"]
        response, status = error_response(exc.code or 500, code, exc.description or exc.name)
        # Keep werkzeug's own headers: Allow on a 405 (RFC 9110), Retry-After, ...
        for name, value in exc.get_headers():
            if name.lower() != "content-type":
                response.headers[name] = value
        return response, status

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        if is_storage_full(exc):
            logger.error("a write failed, the disk is full: %s", exc)
            return _qrq_error_response(StorageFull())
        problem = pg_errors.describe(exc, app.config["QRQ"].database_url)
        if problem is not None:  # PostgreSQL is down or restarting: a retry will do
            logger.error("%s", problem)
            return _qrq_error_response(Unavailable())
        logger.exception("unhandled error")
        return error_response(500, "internal_error", "internal server error")
