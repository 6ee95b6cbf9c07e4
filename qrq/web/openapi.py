"""The JSON API described as OpenAPI 3.1, served at ``GET /api/openapi.json``.

Hand-written as a dict, so it says what the API promises rather than what a
generator guesses; only the card options (and item text limits) are made from
the field table the validator uses (:func:`qrq.cards.options.json_schema`), so
the limits are stated once. ``tests/test_openapi.py`` keeps it true: every ``/api`` route
of the app must be here with its methods and nothing else may be, and the API is
fuzzed from this document (no 5xx; every error in the one error shape);
``tests/test_openapi_answers.py`` checks real answers of the token check (401, 429),
of downloads (206, 304, 416) and real webhook deliveries against it.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify

from qrq.alerts import KINDS
from qrq.cards import options as card_options
from qrq.queue.jobs import ENDED, STATES
from qrq.queue.stats import JOB_TYPES
from qrq.web.analytics import OPENAPI_PATHS as ANALYTICS_PATHS
from qrq.web.analytics import OPENAPI_SCHEMAS as ANALYTICS_SCHEMAS
from qrq.web.openapi_batch import batch_paths
from qrq.web.openapi_jobs import (
    ATTEMPTS_HISTORY,
    CALLBACK_URL,
    CURSOR,
    LINK_HEADER,
    NEXT,
    WAIT,
    limit_param,
    webhooks,
)
from qrq.web.openapi_jobs import paths as following_paths
from qrq.web.openapi_parts import (
    ACCEPTED_HEADERS,
    ACCEPTED_STATUS,
    IDEMPOTENCY_KEY,
    JOB_ID,
    NULLABLE_TIME,
    RETRY_AFTER,
    download_responses,
    error_responses,
    errors_for,
    json_response,
    obj,
    schema_ref,
    with_auth_errors,
)

bp = Blueprint("openapi", __name__, url_prefix="/api")

# A job's record as jobs.public_view makes it: what a webhook delivers, and the core of
# the status API's Job.
_RECORD = {
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
}

_JOB = obj({
    **_RECORD,
    "attempts_history": ATTEMPTS_HISTORY,
    "status_url": {"type": "string"},
    "owner_id": {"type": ["integer", "null"], "description": "Admins only."},
    "worker": {"type": ["string", "null"], "description": "Admins only."},
    "traceback": {"type": ["string", "null"], "description": "Admins only."},
    "total": {"type": "integer", "minimum": 0, "description": "Batch jobs only: items."},
    "completed": {"type": "integer", "minimum": 0,
                  "description": "Batch jobs only: items done."},
    "failed": {"type": "integer", "minimum": 0, "description": "Batch jobs only: items failed."},
}, required=[*_RECORD, "status_url"])

_WEBHOOK_DELIVERY = obj({
    "event": {"const": "job.ended"},
    "job": {**obj(_RECORD), "description": "The job's final record: the Job of the status "
                                           "API without its links, attempts_history, "
                                           "batch counts and admin fields."},
})

_TYPE_COUNTS = obj({
    "queued": {"type": "integer"}, "scheduled": {"type": "integer"},
    "running": {"type": "integer"}, "retrying": {"type": "integer"},
    "failed": {"type": "integer", "description": "Retained failed jobs (dead letters)."},
    "finished_last_hour": {"type": "integer"}, "failed_last_hour": {"type": "integer"},
    "oldest_queued_age_seconds": {"type": ["number", "null"]},
})

_PAUSED = obj({
    "type": {"type": "string"}, "paused_at": {"type": "string", "format": "date-time"},
    "paused_by": {"type": "string"},
    "queued": {"type": "integer", "description": "Due queued jobs it holds back."}})

_QUEUE_STATUS = obj({
    "generated_at": {"type": "string", "format": "date-time"},
    "types": {"type": "object", "additionalProperties": {
        **_TYPE_COUNTS, "properties": {**_TYPE_COUNTS["properties"], "paused": {
            "type": "boolean", "description": "Consumers start no job of this type."}},
        "required": [*_TYPE_COUNTS["required"], "paused"]},
              "description": "pdf, batch, analytics, maintenance and mail, always; "
                             "other types when present."},
    "totals": {**_TYPE_COUNTS, "properties": {**_TYPE_COUNTS["properties"],
                                              "schedule_entries": {"type": "integer"}},
               "required": [*_TYPE_COUNTS["required"], "schedule_entries"]},
    "consumers": {"type": "array", "items": obj({
        "id": {"type": "string"}, "host": {"type": "string"}, "pid": {"type": "integer"},
        "workers": {"type": "integer"},
        "started_at": {"type": "string", "format": "date-time"},
        "last_heartbeat": {"type": "string", "format": "date-time"},
        "heartbeat_age_seconds": {"type": "number"},
        "alive": {"type": "boolean"},
        "job_types": {"type": "array", "items": {"type": "string"},
                      "description": "the only types it takes (empty: every type)"},
        "exclude_job_types": {"type": "array", "items": {"type": "string"},
                              "description": "the types it does not take"},
        "current_jobs": {"type": "array", "items": obj({
            "job_id": {"type": ["string", "null"]}, "type": {"type": ["string", "null"]},
            "name": {"type": ["string", "null"]}, "progress": {"type": ["integer", "null"]},
            "stage": {"type": ["string", "null"]}, "started_at": NULLABLE_TIME})},
    })},
    "alerts": {"type": "array", "items": obj({
        "kind": {"type": "string", "enum": list(KINDS)},
        "message": {"type": "string"}, "since": NULLABLE_TIME})},
    "paused": {"type": "array", "items": _PAUSED},
})

def build_document() -> dict[str, Any]:
    """The OpenAPI document; option limits come from the card field table."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "qrq API",
            "version": "0.1.0",
            "description": "Background jobs for QRCards. Every call needs `Authorization: "
                           "Bearer <token>` (except this document). Every error has one "
                           "shape: the Error schema. An integer field of a JSON body "
                           "(`template_id`, `options.copies`, ...) takes an integer literal: "
                           "`1.0` is a 422, although JSON Schema counts it as an integer. "
                           "A key given twice in one JSON object is a 422 naming it "
                           "(`field`: `options.copies`), as is a query parameter given "
                           "twice. Integer parameters in a path or query take ASCII digits only.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": with_auth_errors({
            "/api/generate-qr-pdf": {"post": {
                "summary": "Queue a QR-code PDF of a template",
                "description": "Answers 202 at once with the job id; no work is done in the "
                               "request.",
                "operationId": "generateQrPdf",
                "requestBody": {"required": True, "content": {"application/json": {"schema": obj(
                    {"template_id": {"type": "integer", "minimum": 1},
                     "options": card_options.json_schema(), "callback_url": CALLBACK_URL},
                    required=["template_id"])}}},
                "parameters": [IDEMPOTENCY_KEY],
                "responses": {
                    "202": {**json_response(obj({
                        "job_id": {"type": "string", "format": "uuid"},
                        "status": ACCEPTED_STATUS,
                        "status_url": {"type": "string"},
                        "estimated_completion": {"type": "string", "format": "date-time"}}),
                        "Queued."), "headers": ACCEPTED_HEADERS},
                    **errors_for(400, 413, 422, 429, 503)},
            }},
            "/api/job-status/{job_id}": {"get": {
                "summary": "A job's status, progress, timestamps, result and error",
                "operationId": "getJobStatus", "parameters": [JOB_ID, WAIT],
                "responses": {"200": {**json_response(schema_ref("Job"), "The job."),
                                      "headers": RETRY_AFTER}, **errors_for(404, 422)},
            }},
            "/api/jobs/{job_id}": {
                "get": {"summary": "Same as /api/job-status/{job_id}", "operationId": "getJob",
                        "parameters": [JOB_ID, WAIT],
                        "responses": {"200": {**json_response(schema_ref("Job"), "The job."),
                                              "headers": RETRY_AFTER},
                                      **errors_for(404, 422)}},
                "delete": {"summary": "Cancel a job",
                           "description": "At once while queued; at its next progress report "
                                          "while running. 409 if it already ended.",
                           "operationId": "cancelJob", "parameters": [JOB_ID],
                           "responses": {"202": json_response(obj({
                               "job_id": {"type": "string"},
                               "status": {"type": "string", "enum": list(STATES)}}),
                               "Cancel recorded."), **errors_for(404, 409, 503)}},
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
                "responses": {"200": {**json_response(obj({
                    "jobs": {"type": "array", "items": schema_ref("Job")},
                    "limit": {"type": "integer"}, "offset": {"type": "integer"},
                    "next": NEXT}), "Jobs."), "headers": LINK_HEADER},
                    **errors_for(422)},
            }},
            "/api/jobs/{job_id}/download": {"get": {
                "summary": "A finished job's PDF, to its owner or an admin",
                "description": "409 (`job_not_finished`, with `job_status`) while the job "
                               "has not finished or if it failed.",
                "operationId": "downloadJob", "parameters": [JOB_ID],
                "responses": {**download_responses("The PDF.", ["application/pdf"]),
                              **errors_for(404, 409, 503)},
            }},
            "/api/templates": {"get": {
                "summary": "Every card template", "operationId": "listTemplates",
                "responses": {"200": json_response(obj({"templates": {"type": "array",
                                                               "items": schema_ref("Template")}}),
                                           "Templates.")},
            }},
            "/api/templates/{template_id}": {"get": {
                "summary": "One card template", "operationId": "getTemplate",
                "parameters": [{"name": "template_id", "in": "path", "required": True,
                                "schema": {"type": "integer", "minimum": 0}}],
                "responses": {"200": json_response(schema_ref("Template"), "The template."),
                              **errors_for(404)},
            }},
            "/api/me": {"get": {
                "summary": "The caller's account", "operationId": "getMe",
                "responses": {"200": json_response(obj({
                    "id": {"type": "integer"}, "name": {"type": "string"},
                    "email": {"type": ["string", "null"]}, "is_admin": {"type": "boolean"},
                    "role": {"enum": ["user", "operator", "admin"]},
                    "created_at": {"type": "string"}}), "The account.")},
            }},
            "/api/admin/jobs/{job_id}/retry": {"post": {
                "summary": "Run a failed, canceled or expired job again under the same id",
                "operationId": "retryJob", "parameters": [JOB_ID],
                "responses": {"202": json_response(obj({"job_id": {"type": "string"},
                                                 "status": {"const": "queued"}}), "Queued again."),
                              **errors_for(403, 404, 409, 503)},
            }},
            "/api/admin/jobs/retry-failed": {"post": {
                "summary": "Re-run every failed job, optionally of one type",
                "operationId": "retryFailed",
                "requestBody": {"required": False, "content": {"application/json": {
                    "schema": obj({"type": {"type": "string"}}, required=[])}}},
                "responses": {"202": json_response(obj({
                    "retried": {"type": "array", "items": {"type": "string"}},
                    "skipped": {"type": "array", "items": obj({
                        "job_id": {"type": "string"}, "reason": {"type": "string"}})}}),
                    "The jobs queued again, and those that could not be, with the reason."),
                              **errors_for(400, 403, 404, 409, 413, 422, 503)},
            }},
            "/api/admin/jobs/purge": {"post": {
                "summary": "Delete ended jobs (records and files) older than an age",
                "operationId": "purgeJobs",
                "requestBody": {"required": False, "content": {"application/json": {
                    "schema": obj({"older_than": {"type": "string", "default": "30d",
                                                   "description": "30d, 12h, 90m, ..."},
                                    "status": {"type": "string", "enum": list(ENDED)}},
                                   required=[])}}},
                "responses": {"200": json_response(obj({"purged": {"type": "integer"}}),
                                           "How many jobs went."),
                              **errors_for(400, 403, 413, 422, 503)},
            }},
            "/api/admin/schedule/{name}/run": {"post": {
                "summary": "Run a periodic task now, as a job of its own (its schedule goes on)",
                "operationId": "runPeriodicTask",
                "parameters": [{"name": "name", "in": "path", "required": True,
                                "schema": {"type": "string"},
                                "description": "e.g. retention.purge (the schedule page)"}],
                "responses": {"202": json_response(obj({
                    "job_id": {"type": "string"}, "name": {"type": "string"},
                    "status": {"const": "queued"}, "status_url": {"type": "string"}}),
                    "Queued."), **errors_for(403, 404, 422, 503)},
            }},
            "/api/admin/queue-status": {"get": {
                "summary": "Counts per job type, the oldest queued job's age, the consumers",
                "operationId": "getQueueStatus",
                "responses": {"200": json_response(schema_ref("QueueStatus"), "The queue status."),
                              **errors_for(403)},
            }},
            **{f"/api/admin/types/{{job_type}}/{verb}": {"post": {
                "summary": summary, "operationId": f"{verb}JobType",
                "parameters": [{"name": "job_type", "in": "path", "required": True,
                                "schema": {"type": "string", "enum": list(JOB_TYPES)}}],
                "responses": {"200": json_response(obj({
                    "type": {"type": "string"}, "paused": {"type": "boolean"},
                    "changed": {"type": "boolean",
                                "description": "False: it was in that state already."},
                    "queued": {"type": "integer"}, "message": {"type": "string"}}),
                    "The type's state now, and its due queued jobs."),
                    **errors_for(403, 422, 503)},
            }} for verb, summary in (
                ("pause", "Pause a job type: consumers start no new job of it; queued "
                          "jobs wait"),
                ("resume", "Resume a paused job type"))},
            **batch_paths(),
            "/api/openapi.json": {"get": {
                "summary": "This document", "operationId": "getOpenApi", "security": [],
                "responses": {"200": json_response({"type": "object"}, "OpenAPI 3.1.")},
            }},
            **ANALYTICS_PATHS,
            **following_paths(),
        }),
        "webhooks": webhooks(),
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "An API token from `qrq users "
                                                          "create NAME`."}},
            "schemas": {
                "Error": obj({"error": obj({
                    "status": {"type": "integer", "minimum": 400, "maximum": 599},
                    "code": {"type": "string"},
                    "message": {"type": "string", "minLength": 1},
                    "field": {"type": ["string", "null"]},
                    "job_status": {"type": "string", "enum": list(STATES),
                                   "description": "Only on 409 job_not_finished."}},
                    required=["status", "code", "message", "field"])}),
                "Job": _JOB,
                "WebhookDelivery": _WEBHOOK_DELIVERY,
                "Template": obj({
                    "id": {"type": "integer"}, "name": {"type": "string"},
                    "domain": {"type": "string"}, "payload": {"type": "string"},
                    "title": {"type": "string"},
                    "lines": {"type": "array", "items": {"type": "string"}},
                    "page_size": {"type": "string"}, "grid": {"type": "string"},
                    "qr_size_mm": {"type": "number"}, "qr_x_mm": {"type": ["number", "null"]},
                    "qr_y_mm": {"type": ["number", "null"]},
                    "colors": obj({"fg": {"type": "string"}, "bg": {"type": "string"}}),
                    "error_correction": {"type": "string"}, "quiet_zone": {"type": "integer"}}),
                "QueueStatus": _QUEUE_STATUS,
                **ANALYTICS_SCHEMAS,
            },
            "responses": error_responses(),
        },
    }



SPEC: dict[str, Any] = build_document()


@bp.get("/openapi.json")
def openapi_json():
    """This API as OpenAPI 3.1 (no token needed)."""
    return jsonify(SPEC)
