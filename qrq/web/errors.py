"""One JSON error shape for every failure, registered at app level.

Every error body is ``{"error": {"status", "code", "message", "field"}}``.
Handlers live on the app, not a blueprint, because a blueprint never sees
routing errors (an unknown URL, a wrong method).
"""

from __future__ import annotations

import logging

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from qrq.errors import QrqError

logger = logging.getLogger("qrq.web")


def error_body(status: int, code: str, message: str, field: str | None = None) -> dict:
    return {"error": {"status": status, "code": code, "message": message, "field": field}}


def error_response(status: int, code: str, message: str, field: str | None = None):
    return jsonify(error_body(status, code, message, field)), status


def init_app(app: Flask) -> None:
    @app.errorhandler(QrqError)
    def _qrq_error(exc: QrqError):
        response = jsonify({"error": exc.to_dict()})
        if exc.status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="qrq"'
        if getattr(exc, "retry_after", None):
            response.headers["Retry-After"] = str(exc.retry_after)
        return response, exc.status

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        code = (exc.name or "error").lower().replace(" ", "_")
        if exc.code == 413:
            code = "payload_too_large"
        return error_response(exc.code or 500, code, exc.description or exc.name)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        logger.exception("unhandled error")
        return error_response(500, "internal_error", "internal server error")
