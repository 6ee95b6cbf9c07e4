"""Shared pieces of the OpenAPI document: error responses (and the 401 and 429 of every
operation that needs a token, added in one place), schema helpers, the headers of an
accepted job and the answers of a download. ``qrq/web/openapi.py`` assembles the
document."""

from __future__ import annotations

from typing import Any

from qrq.queue.jobs import STATES

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
    412: ("PreconditionFailed", "`precondition_failed`: `If-Match` names no ETag of the "
                                "file (it changed since)."),
    416: ("RangeNotSatisfiable", "`requested_range_not_satisfiable`: the `Range` header "
                                 "is malformed, asks for several ranges, or starts past "
                                 "the end; `Content-Range: bytes */<size>` gives the size."),
    429: ("TooManyRequests", "`too_many_jobs`: the user has QRQ_MAX_ACTIVE_JOBS jobs queued "
                             "or running; `too_many_attempts`: too many bad tokens from "
                             "this address, wait `Retry-After` seconds (any call with a "
                             "token, good or bad, answers this meanwhile)."),
    503: ("StorageFull", "`storage_full`: the server's disk is full, nothing was saved; "
                         "`store_unavailable`: the artifact store (QRQ_ARTIFACT_STORE) "
                         "cannot be reached. Retry later (`Retry-After`)."),
}

_SECONDS = {"type": "string", "pattern": "^[0-9]+$"}
RETRY_AFTER = {"Retry-After": {"schema": _SECONDS,
                               "description": "Seconds to wait before asking again "
                                              "(only while the job has not ended)."}}
_ERROR_HEADERS = {
    416: {"Content-Range": {"required": True, "schema": {"type": "string",
                                                         "pattern": r"^bytes \*/[0-9]+$"}}},
    429: {"Retry-After": {"schema": _SECONDS, "description": "With `too_many_attempts`: "
                                                             "seconds until the address may "
                                                             "try again."}},
    503: {"Retry-After": {"schema": _SECONDS}},
}


def error_responses() -> dict[str, Any]:
    """``components.responses``: one per error status, each in the one error shape."""
    responses = {}
    for status, (name, text) in ERRORS.items():
        responses[name] = json_response(ERROR, text)
        if status in _ERROR_HEADERS:
            responses[name]["headers"] = _ERROR_HEADERS[status]
    return responses


def errors_for(*statuses: int) -> dict[str, Any]:
    return {str(s): {"$ref": f"#/components/responses/{ERRORS[s][0]}"} for s in statuses}


def with_auth_errors(paths: dict[str, Any]) -> dict[str, Any]:
    """*paths* with 401 and 429 among the answers of every operation that needs a token:
    the token check answers 401, and 429 while the address is locked out after bad
    tokens (qrq.appdb.throttle). Added here, so no operation can leave them out."""
    return {path: {method: operation if operation.get("security") == [] else {
        **operation, "responses": dict(sorted({**operation["responses"],
                                               **errors_for(401, 429)}.items()))}
        for method, operation in item.items()} for path, item in paths.items()}


# A download from an S3 artifact store (QRQ_S3_DOWNLOAD=redirect).
PRESIGNED_REDIRECT = {"description": "A short-lived presigned URL of the file, in "
                                     "`Location` (S3 artifact store).",
                      "headers": {"Location": {"schema": {"type": "string"}}}}


def download_responses(description: str, media_types: list[str]) -> dict[str, Any]:
    """The answers of a stored file's download (qrq.web.downloads.send_artifact): with
    ranges and an ETag, or a redirect to S3; its errors are the operation's own."""
    content = {media_type: {"schema": {"type": "string", "contentMediaType": media_type}}
               for media_type in media_types}
    etag = {"ETag": {"required": True, "schema": {"type": "string"}}}
    return {
        "200": {"description": description, "content": content, "headers": {
            **etag, "Last-Modified": {"schema": {"type": "string"}},
            "Accept-Ranges": {"schema": {"const": "bytes"}}}},
        "206": {"description": "The one byte range a `Range` header asked for (with "
                               "`If-Range`: only while it matches the file, else 200).",
                "content": content,
                "headers": {**etag, "Content-Range": {"required": True, "schema": {
                    "type": "string", "pattern": "^bytes [0-9]+-[0-9]+/[0-9]+$"}}}},
        "302": PRESIGNED_REDIRECT,
        "304": {"description": "Not modified: `If-None-Match` names the current ETag (or "
                               "`If-Modified-Since` is not older than the file). No body.",
                "headers": etag},
        **errors_for(412, 416),
    }


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
