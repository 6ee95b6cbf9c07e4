"""The JSON API described as OpenAPI 3.1, served at ``GET /api/openapi.json``.

Hand-written as a dict, so it says what the API promises rather than what a
generator guesses; only the card options (and item text limits) are made from
the field table the validator uses (:func:`qrq.cards.options.json_schema`), so
the limits are stated once. ``tests/test_openapi.py`` keeps it true: every ``/api`` route
of the app must be here with its methods and nothing else may be, and the API is
fuzzed from this document (no 5xx; every error in the one error shape).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify

from qrq.cards import options as card_options
from qrq.queue.jobs import ENDED, STATES
from qrq.web.analytics import OPENAPI_PATHS as ANALYTICS_PATHS
from qrq.web.analytics import OPENAPI_SCHEMAS as ANALYTICS_SCHEMAS
from qrq.web.openapi_jobs import (
    CALLBACK_URL,
    CURSOR,
    LINK_HEADER,
    NEXT,
    RETRY_AFTER,
    WAIT,
    limit_param,
)
from qrq.web.openapi_jobs import paths as following_paths

bp = Blueprint("openapi", __name__, url_prefix="/api")

ERROR = {"$ref": "#/components/schemas/Error"}
NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}
JOB_ID = {"name": "job_id", "in": "path", "required": True,
          "schema": {"type": "string", "maxLength": 100},
          "description": "A job id (a UUID). Anything else is a 404."}

_ERRORS = {
    400: ("BadRequest", "The request is malformed (not JSON, not an object)."),
    401: ("Unauthorized", "No valid API token (`Authorization: Bearer <token>`)."),
    403: ("Forbidden", "The token's user may not do this (admins only)."),
    404: ("NotFound", "No such resource, or another user's."),
    409: ("Conflict", "The resource's state does not allow this."),
    413: ("PayloadTooLarge", "The body is larger than QRQ_MAX_REQUEST_BYTES."),
    422: ("ValidationError", "A field has an invalid value; `field` names it."),
    429: ("TooManyJobs", "`too_many_jobs`: the user has QRQ_MAX_ACTIVE_JOBS jobs queued "
                         "or running; `too_many_attempts`: too many bad tokens from this "
                         "address, wait `Retry-After` seconds."),
    503: ("StorageFull", "The server's disk is full; nothing was saved. Retry later "
                         "(`Retry-After`)."),
}


def _errors(*statuses: int) -> dict[str, Any]:
    if 401 in statuses:  # a token check may also be throttled (qrq.appdb.throttle)
        statuses = tuple(sorted({*statuses, 429}))
    return {str(s): {"$ref": f"#/components/responses/{_ERRORS[s][0]}"} for s in statuses}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(properties: dict[str, Any], required: list[str] | None = None,
         additional: bool = False) -> dict[str, Any]:
    schema = {"type": "object", "properties": properties,
              "required": list(properties) if required is None else required}
    if not additional:
        schema["additionalProperties"] = False
    return schema


_JOB = _obj({
    "job_id": {"type": "string", "format": "uuid"},
    "type": {"type": "string"},
    "status": {"type": "string", "enum": list(STATES)},
    "progress": {"type": "integer", "minimum": 0, "maximum": 100},
    "stage": {"type": "string"},
    "created_at": {"type": "string", "format": "date-time"},
    "started_at": NULLABLE_TIME,
    "finished_at": NULLABLE_TIME,
    "result": {"type": ["object", "null"]},
    "error": {"type": ["string", "null"]},
    "attempts": {"type": "integer", "minimum": 0},
    "next_attempt_at": NULLABLE_TIME,
    "params": {"type": "object"},
    "status_url": {"type": "string"},
    "owner_id": {"type": ["integer", "null"], "description": "Admins only."},
    "worker": {"type": ["string", "null"], "description": "Admins only."},
    "traceback": {"type": ["string", "null"], "description": "Admins only."},
    "total": {"type": "integer", "minimum": 0, "description": "Batch jobs only: items."},
    "completed": {"type": "integer", "minimum": 0,
                  "description": "Batch jobs only: items done."},
    "failed": {"type": "integer", "minimum": 0, "description": "Batch jobs only: items failed."},
}, required=["job_id", "type", "status", "progress", "stage", "created_at", "started_at",
             "finished_at", "result", "error", "attempts", "next_attempt_at", "params",
             "status_url"])

_TYPE_COUNTS = _obj({
    "queued": {"type": "integer"}, "scheduled": {"type": "integer"},
    "running": {"type": "integer"}, "retrying": {"type": "integer"},
    "failed": {"type": "integer", "description": "Retained failed jobs (dead letters)."},
    "finished_last_hour": {"type": "integer"}, "failed_last_hour": {"type": "integer"},
    "oldest_queued_age_seconds": {"type": ["number", "null"]},
})

_QUEUE_STATUS = _obj({
    "generated_at": {"type": "string", "format": "date-time"},
    "types": {"type": "object", "additionalProperties": _TYPE_COUNTS,
              "description": "pdf, batch, analytics, maintenance and mail, always; "
                             "other types when present."},
    "totals": {**_TYPE_COUNTS, "properties": {**_TYPE_COUNTS["properties"],
                                              "schedule_entries": {"type": "integer"}},
               "required": [*_TYPE_COUNTS["required"], "schedule_entries"]},
    "consumers": {"type": "array", "items": _obj({
        "id": {"type": "string"}, "host": {"type": "string"}, "pid": {"type": "integer"},
        "workers": {"type": "integer"},
        "started_at": {"type": "string", "format": "date-time"},
        "last_heartbeat": {"type": "string", "format": "date-time"},
        "heartbeat_age_seconds": {"type": "number"},
        "alive": {"type": "boolean"},
        "current_jobs": {"type": "array", "items": _obj({
            "job_id": {"type": ["string", "null"]}, "type": {"type": ["string", "null"]},
            "name": {"type": ["string", "null"]}, "progress": {"type": ["integer", "null"]},
            "stage": {"type": ["string", "null"]}, "started_at": NULLABLE_TIME})},
    })},
    "alerts": {"type": "array", "items": _obj({
        "kind": {"type": "string", "enum": ["backlog", "queue_age", "no_consumer"]},
        "message": {"type": "string"}, "since": NULLABLE_TIME})},
})

ACCEPTED_STATUS = {"type": "string", "enum": list(STATES),
                   "description": "queued; for a repeated Idempotency-Key, the first "
                                  "job's status now."}

_BATCH_ACCEPTED = _obj({
    "batch_job_id": {"type": "string", "format": "uuid"},
    "parent_job_id": {"type": "string", "format": "uuid"},
    "total_items": {"type": "integer", "minimum": 0},
    "status": ACCEPTED_STATUS,
    "status_url": {"type": "string"},
    "items_url": {"type": "string"},
}, required=["batch_job_id", "total_items", "status", "status_url", "items_url"])

_BATCH = _obj({
    "batch_job_id": {"type": "string", "format": "uuid"},
    "status": {"type": "string", "enum": list(STATES)},
    "progress": {"type": "integer", "minimum": 0, "maximum": 100},
    "stage": {"type": "string"},
    "total": {"type": "integer"}, "completed": {"type": "integer"},
    "failed": {"type": "integer"},
    "parent_job_id": {"type": ["string", "null"]},
    "status_url": {"type": "string"}, "items_url": {"type": "string"},
    "downloads": {"type": "object", "additionalProperties": {
        "type": "object", "properties": {"url": {"type": "string"}}, "required": ["url"]},
        "description": "pdf and zip once written, each with its url."},
})

_BATCH_ITEM = {
    "type": "object",
    "properties": {
        "idx": {"type": "integer"}, "template_id": {"type": "integer"},
        "data": {"type": "string"},
        "status": {"type": "string", "enum": ["pending", "ok", "failed"]},
        "output": {"type": ["object", "null"], "properties": {
            "file": {"type": "string"},
            "files": {"type": "array", "items": {"type": "string"},
                      "description": "The item's files in the ZIP, one per format."},
            "svg_url": {"type": "string"}, "png_url": {"type": "string"}}},
        "error": {"type": ["string", "null"]},
        "title": {"type": "string"}, "source_idx": {"type": "integer"},
    },
    "required": ["idx", "template_id", "data", "status", "output", "error"],
    "additionalProperties": False,
}

_BATCH_ID = {"name": "job_id", "in": "path", "required": True,
             "schema": {"type": "string", "maxLength": 100},
             "description": "The batch's job id."}

IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key", "in": "header", "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"},
    "description": "Any unique string (a UUID): a repeated key from the same user within "
                   "24 h answers with the first request's job instead of queueing another, "
                   "so a client may retry after a timeout. The same key with another body "
                   "is a 422."}
ACCEPTED_HEADERS = {
    "Location": {"schema": {"type": "string"}}, **RETRY_AFTER,
    "Idempotent-Replayed": {"schema": {"const": "true"},
                            "description": "The answer is an earlier request's job."}}


def batch_paths() -> dict[str, Any]:
    """The batch routes; item text limits come from the card field table."""
    title, lines = (card_options.FIELDS[name].check.json_schema for name in ("title", "lines"))
    return {
        "/api/batch/generate-qrs": {"post": {
            "summary": "Queue a batch of codes",
            "description": "Either template_ids (each rendered options.copies times) or items "
                           "(one code each); answers 202 at once. More than "
                           "QRQ_MAX_BATCH_ITEMS items, or a body over QRQ_MAX_BATCH_BYTES, is "
                           "a 413.",
            "operationId": "generateBatch",
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "additionalProperties": False,
                "properties": {
                    "template_ids": {"type": "array", "minItems": 1,
                                     "items": {"type": "integer", "minimum": 1}},
                    "items": {"type": "array", "minItems": 1, "items": {
                        "type": "object", "additionalProperties": False,
                        "required": ["template_id"],
                        "properties": {"template_id": {"type": "integer", "minimum": 1},
                                       "data": {"type": "string"},
                                       "title": title, "lines": lines}}},
                    "options": {"type": "object", "description":
                                "The PDF options (copies: per template), and formats: the "
                                'ZIP\'s files per code, ["svg"] (default), ["png"] or both. '
                                "PNGs are drawn at 300 dpi for the code's size in mm."},
                    "callback_url": CALLBACK_URL,
                },
                "oneOf": [{"required": ["template_ids"]}, {"required": ["items"]}]}}}},
            "parameters": [IDEMPOTENCY_KEY],
            "responses": {"202": {**_json(_BATCH_ACCEPTED, "Queued."),
                                  "headers": ACCEPTED_HEADERS},
                          **_errors(400, 401, 413, 422, 429, 503)},
        }},
        "/api/batch/{job_id}": {"get": {
            "summary": "A batch's counts, status and download links",
            "operationId": "getBatch", "parameters": [_BATCH_ID],
            "responses": {"200": _json(_BATCH, "The batch."), **_errors(401, 404)},
        }},
        "/api/batch/{job_id}/items": {"get": {
            "summary": "One page of a batch's items, in index order",
            "operationId": "listBatchItems",
            "parameters": [
                _BATCH_ID,
                {"name": "status", "in": "query",
                 "schema": {"type": "string", "enum": ["pending", "ok", "failed"]}},
                limit_param(100, 1000), CURSOR,
                {"name": "page", "in": "query", "description": "Older clients: page number "
                 "(use cursor).",
                 "schema": {"type": "integer", "minimum": 1, "maximum": 10**6, "default": 1}},
                {"name": "per_page", "in": "query", "description": "Older clients: limit.",
                 "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}},
            ],
            "responses": {"200": {**_json(_obj({
                "items": {"type": "array", "items": _BATCH_ITEM},
                "page": {"type": "integer"}, "per_page": {"type": "integer"},
                "limit": {"type": "integer"},
                "total": {"type": "integer"}, "next_page": {"type": ["integer", "null"]},
                "status": {"type": ["string", "null"]}, "batch": _BATCH, "next": NEXT}),
                "Items."), "headers": LINK_HEADER},
                **_errors(401, 404, 422)},
        }},
        "/api/batch/{job_id}/items/{idx}/{fmt}": {"get": {
            "summary": "One finished item's code as SVG or PNG, as its batch's ZIP has it",
            "operationId": "getBatchItemCode",
            "parameters": [_BATCH_ID, {"name": "idx", "in": "path", "required": True,
                                       "schema": {"type": "integer", "minimum": 0}},
                           {"name": "fmt", "in": "path", "required": True,
                            "schema": {"type": "string", "enum": ["svg", "png"]}}],
            "responses": {"200": {"description": "The code.", "content": {
                "image/svg+xml": {"schema": {"type": "string"}},
                "image/png": {"schema": {"type": "string", "contentMediaType": "image/png"}}}},
                **_errors(401, 404)},
        }},
        "/api/batch/{job_id}/retry-failed": {"post": {
            "summary": "Re-run only the failed items, as a new batch linked to this one",
            "operationId": "retryBatchFailed", "parameters": [_BATCH_ID],
            "responses": {"202": {**_json(_BATCH_ACCEPTED, "Queued."),
                                  "headers": {"Location": {"schema": {"type": "string"}}}},
                          **_errors(401, 404, 409, 429, 503)},
        }},
        "/api/batch/{job_id}/download/{kind}": {"get": {
            "summary": "The batch's combined PDF or ZIP of SVGs, once written",
            "operationId": "downloadBatch",
            "parameters": [_BATCH_ID, {"name": "kind", "in": "path", "required": True,
                                       "schema": {"type": "string", "enum": ["pdf", "zip"]}}],
            "responses": {"200": {"description": "The file.", "content": {
                "application/pdf": {"schema": {"type": "string"}},
                "application/zip": {"schema": {"type": "string"}}}},
                **_errors(401, 404, 409)},
        }},
    }

def build_document() -> dict[str, Any]:
    """The OpenAPI document; option limits come from the card field table."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "qrq API",
            "version": "0.1.0",
            "description": "Background jobs for QRCards. Every call needs `Authorization: "
                           "Bearer <token>` (except this document). Every error has one "
                           "shape: the Error schema.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": {
            "/api/generate-qr-pdf": {"post": {
                "summary": "Queue a QR-code PDF of a template",
                "description": "Answers 202 at once with the job id; no work is done in the "
                               "request.",
                "operationId": "generateQrPdf",
                "requestBody": {"required": True, "content": {"application/json": {"schema": _obj(
                    {"template_id": {"type": "integer", "minimum": 1},
                     "options": card_options.json_schema(), "callback_url": CALLBACK_URL},
                    required=["template_id"])}}},
                "parameters": [IDEMPOTENCY_KEY],
                "responses": {
                    "202": {**_json(_obj({
                        "job_id": {"type": "string", "format": "uuid"},
                        "status": ACCEPTED_STATUS,
                        "status_url": {"type": "string"},
                        "estimated_completion": {"type": "string", "format": "date-time"}}),
                        "Queued."), "headers": ACCEPTED_HEADERS},
                    **_errors(400, 401, 413, 422, 429, 503)},
            }},
            "/api/job-status/{job_id}": {"get": {
                "summary": "A job's status, progress, timestamps, result and error",
                "operationId": "getJobStatus", "parameters": [JOB_ID, WAIT],
                "responses": {"200": {**_json(_ref("Job"), "The job."),
                                      "headers": RETRY_AFTER}, **_errors(401, 404, 422)},
            }},
            "/api/jobs/{job_id}": {
                "get": {"summary": "Same as /api/job-status/{job_id}", "operationId": "getJob",
                        "parameters": [JOB_ID, WAIT],
                        "responses": {"200": {**_json(_ref("Job"), "The job."),
                                              "headers": RETRY_AFTER},
                                      **_errors(401, 404, 422)}},
                "delete": {"summary": "Cancel a job",
                           "description": "At once while queued; at its next progress report "
                                          "while running. 409 if it already ended.",
                           "operationId": "cancelJob", "parameters": [JOB_ID],
                           "responses": {"202": _json(_obj({
                               "job_id": {"type": "string"},
                               "status": {"type": "string", "enum": list(STATES)}}),
                               "Cancel recorded."), **_errors(401, 404, 409, 503)}},
            },
            "/api/jobs": {"get": {
                "summary": "The caller's jobs, newest first (admins: everyone's)",
                "operationId": "listJobs",
                "parameters": [
                    {"name": "status", "in": "query", "schema": {"type": "string",
                                                                 "enum": list(STATES)}},
                    {"name": "type", "in": "query", "description": "A job type (pdf, batch, "
                     "analytics, maintenance, mail, webhook...); an unknown one is a 422.",
                     "schema": {"type": "string"}},
                    limit_param(50, 200), CURSOR,
                    {"name": "offset", "in": "query", "description": "Older clients; ignored "
                     "with a cursor.",
                     "schema": {"type": "integer", "minimum": 0, "maximum": 10**9,
                                "default": 0}},
                ],
                "responses": {"200": {**_json(_obj({
                    "jobs": {"type": "array", "items": _ref("Job")},
                    "limit": {"type": "integer"}, "offset": {"type": "integer"},
                    "next": NEXT}), "Jobs."), "headers": LINK_HEADER},
                    **_errors(401, 422)},
            }},
            "/api/jobs/{job_id}/download": {"get": {
                "summary": "A finished job's PDF, to its owner or an admin",
                "description": "409 (`job_not_finished`, with `job_status`) while the job "
                               "has not finished or if it failed.",
                "operationId": "downloadJob", "parameters": [JOB_ID],
                "responses": {"200": {"description": "The PDF.", "content": {
                    "application/pdf": {"schema": {"type": "string",
                                                   "contentMediaType": "application/pdf"}}}},
                    **_errors(401, 404, 409)},
            }},
            "/api/templates": {"get": {
                "summary": "Every card template", "operationId": "listTemplates",
                "responses": {"200": _json(_obj({"templates": {"type": "array",
                                                               "items": _ref("Template")}}),
                                           "Templates."), **_errors(401)},
            }},
            "/api/templates/{template_id}": {"get": {
                "summary": "One card template", "operationId": "getTemplate",
                "parameters": [{"name": "template_id", "in": "path", "required": True,
                                "schema": {"type": "integer", "minimum": 0}}],
                "responses": {"200": _json(_ref("Template"), "The template."),
                              **_errors(401, 404)},
            }},
            "/api/me": {"get": {
                "summary": "The caller's account", "operationId": "getMe",
                "responses": {"200": _json(_obj({
                    "id": {"type": "integer"}, "name": {"type": "string"},
                    "email": {"type": ["string", "null"]}, "is_admin": {"type": "boolean"},
                    "created_at": {"type": "string"}}), "The account."), **_errors(401)},
            }},
            "/api/admin/jobs/{job_id}/retry": {"post": {
                "summary": "Run a failed, canceled or expired job again under the same id",
                "operationId": "retryJob", "parameters": [JOB_ID],
                "responses": {"202": _json(_obj({"job_id": {"type": "string"},
                                                 "status": {"const": "queued"}}), "Queued again."),
                              **_errors(401, 403, 404, 409, 503)},
            }},
            "/api/admin/jobs/retry-failed": {"post": {
                "summary": "Re-run every failed job, optionally of one type",
                "operationId": "retryFailed",
                "requestBody": {"required": False, "content": {"application/json": {
                    "schema": _obj({"type": {"type": "string"}}, required=[])}}},
                "responses": {"202": _json(_obj({
                    "retried": {"type": "array", "items": {"type": "string"}},
                    "skipped": {"type": "array", "items": _obj({
                        "job_id": {"type": "string"}, "reason": {"type": "string"}})}}),
                    "The jobs queued again, and those that could not be, with the reason."),
                              **_errors(400, 401, 403, 404, 409, 413, 422, 503)},
            }},
            "/api/admin/jobs/purge": {"post": {
                "summary": "Delete ended jobs (records and files) older than an age",
                "operationId": "purgeJobs",
                "requestBody": {"required": False, "content": {"application/json": {
                    "schema": _obj({"older_than": {"type": "string", "default": "30d",
                                                   "description": "30d, 12h, 90m, ..."},
                                    "status": {"type": "string", "enum": list(ENDED)}},
                                   required=[])}}},
                "responses": {"200": _json(_obj({"purged": {"type": "integer"}}),
                                           "How many jobs went."),
                              **_errors(400, 401, 403, 413, 422, 503)},
            }},
            "/api/admin/queue-status": {"get": {
                "summary": "Counts per job type, the oldest queued job's age, the consumers",
                "operationId": "getQueueStatus",
                "responses": {"200": _json(_ref("QueueStatus"), "The queue status."),
                              **_errors(401, 403)},
            }},
            **batch_paths(),
            "/api/openapi.json": {"get": {
                "summary": "This document", "operationId": "getOpenApi", "security": [],
                "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1.")},
            }},
            **ANALYTICS_PATHS,
            **following_paths(),
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "An API token from `qrq users "
                                                          "create NAME`."}},
            "schemas": {
                "Error": _obj({"error": _obj({
                    "status": {"type": "integer", "minimum": 400, "maximum": 599},
                    "code": {"type": "string"},
                    "message": {"type": "string", "minLength": 1},
                    "field": {"type": ["string", "null"]},
                    "job_status": {"type": "string", "enum": list(STATES),
                                   "description": "Only on 409 job_not_finished."}},
                    required=["status", "code", "message", "field"])}),
                "Job": _JOB,
                "Template": _obj({
                    "id": {"type": "integer"}, "name": {"type": "string"},
                    "domain": {"type": "string"}, "payload": {"type": "string"},
                    "title": {"type": "string"},
                    "lines": {"type": "array", "items": {"type": "string"}},
                    "page_size": {"type": "string"}, "grid": {"type": "string"},
                    "qr_size_mm": {"type": "number"}, "qr_x_mm": {"type": ["number", "null"]},
                    "qr_y_mm": {"type": ["number", "null"]},
                    "colors": _obj({"fg": {"type": "string"}, "bg": {"type": "string"}}),
                    "error_correction": {"type": "string"}, "quiet_zone": {"type": "integer"}}),
                "QueueStatus": _QUEUE_STATUS,
                **ANALYTICS_SCHEMAS,
            },
            "responses": {name: _json(ERROR, text) for name, text in _ERRORS.values()},
        },
    }



SPEC: dict[str, Any] = build_document()


@bp.get("/openapi.json")
def openapi_json():
    """This API as OpenAPI 3.1 (no token needed)."""
    return jsonify(SPEC)
