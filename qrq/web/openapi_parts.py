"""Shared pieces of the OpenAPI document: error responses, schema helpers and the
headers of an accepted job. ``qrq/web/openapi.py`` assembles the document."""

from __future__ import annotations

from typing import Any

from qrq.queue.jobs import STATES
from qrq.web.openapi_jobs import RETRY_AFTER

ERROR = {"$ref": "#/components/schemas/Error"}
NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}
JOB_ID = {"name": "job_id", "in": "path", "required": True,
          "schema": {"type": "string", "maxLength": 100},
          "description": "A job id (a UUID). Anything else is a 404."}

ERRORS = {
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
    503: ("StorageFull", "`storage_full`: the server's disk is full, nothing was saved; "
                         "`store_unavailable`: the artifact store (QRQ_ARTIFACT_STORE) "
                         "cannot be reached. Retry later (`Retry-After`)."),
}


# A download from an S3 artifact store (QRQ_S3_DOWNLOAD=redirect).
PRESIGNED_REDIRECT = {"description": "A short-lived presigned URL of the file, in "
                                     "`Location` (S3 artifact store).",
                      "headers": {"Location": {"schema": {"type": "string"}}}}


def errors_for(*statuses: int) -> dict[str, Any]:
    if 401 in statuses:  # a token check may also be throttled (qrq.appdb.throttle)
        statuses = tuple(sorted({*statuses, 429}))
    return {str(s): {"$ref": f"#/components/responses/{ERRORS[s][0]}"} for s in statuses}


def json_response(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def schema_ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(properties: dict[str, Any], required: list[str] | None = None,
         additional: bool = False) -> dict[str, Any]:
    schema = {"type": "object", "properties": properties,
              "required": list(properties) if required is None else required}
    if not additional:
        schema["additionalProperties"] = False
    return schema


ACCEPTED_STATUS = {"type": "string", "enum": list(STATES),
                   "description": "queued; for a repeated Idempotency-Key, the first "
                                  "job's status now."}

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
