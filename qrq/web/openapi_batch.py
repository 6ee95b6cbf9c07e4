"""The bulk-generation part of the OpenAPI document (``/api/batch/...``)."""

from __future__ import annotations

from typing import Any

from qrq.cards import options as card_options
from qrq.queue.jobs import STATES
from qrq.web.openapi_jobs import CALLBACK_URL, CURSOR, LINK_HEADER, NEXT, limit_param
from qrq.web.openapi_parts import (
    ACCEPTED_HEADERS,
    ACCEPTED_STATUS,
    IDEMPOTENCY_KEY,
    download_responses,
    errors_for,
    json_response,
    obj,
)

_BATCH_ACCEPTED = obj({
    "batch_job_id": {"type": "string", "format": "uuid"},
    "parent_job_id": {"type": "string", "format": "uuid"},
    "total_items": {"type": "integer", "minimum": 0},
    "status": ACCEPTED_STATUS,
    "status_url": {"type": "string"},
    "items_url": {"type": "string"},
}, required=["batch_job_id", "total_items", "status", "status_url", "items_url"])

_BATCH = obj({
    "batch_job_id": {"type": "string", "format": "uuid"},
    "status": {"type": "string", "enum": list(STATES)},
    "progress": {"type": "integer", "minimum": 0, "maximum": 100},
    "stage": {"type": "string"},
    "total": {"type": "integer"}, "completed": {"type": "integer"},
    "failed": {"type": "integer"},
    "parent_job_id": {"type": ["string", "null"]},
    "retry_job_ids": {"type": "array", "items": {"type": "string", "format": "uuid"},
                      "description": "the batches that re-ran this one's failed items "
                                     "(retry-failed): the latest 50, oldest first."},
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
            "responses": {"202": {**json_response(_BATCH_ACCEPTED, "Queued."),
                                  "headers": ACCEPTED_HEADERS},
                          **errors_for(400, 413, 422, 429, 503)},
        }},
        "/api/batch/{job_id}": {"get": {
            "summary": "A batch's counts, status and download links",
            "operationId": "getBatch", "parameters": [_BATCH_ID],
            "responses": {"200": json_response(_BATCH, "The batch."), **errors_for(404)},
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
            "responses": {"200": {**json_response(obj({
                "items": {"type": "array", "items": _BATCH_ITEM},
                "page": {"type": "integer"}, "per_page": {"type": "integer"},
                "limit": {"type": "integer"},
                "total": {"type": "integer"}, "next_page": {"type": ["integer", "null"]},
                "status": {"type": ["string", "null"]}, "batch": _BATCH, "next": NEXT}),
                "Items."), "headers": LINK_HEADER},
                **errors_for(404, 422)},
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
                **errors_for(404)},
        }},
        "/api/batch/{job_id}/retry-failed": {"post": {
            "summary": "Re-run only the failed items, as a new batch linked to this one",
            "operationId": "retryBatchFailed", "parameters": [_BATCH_ID],
            "responses": {"202": {**json_response(_BATCH_ACCEPTED, "Queued."),
                                  "headers": {"Location": {"schema": {"type": "string"}}}},
                          **errors_for(404, 409, 429, 503)},
        }},
        "/api/batch/{job_id}/download/{kind}": {"get": {
            "summary": "The batch's combined PDF or ZIP of SVGs, once written",
            "operationId": "downloadBatch",
            "parameters": [_BATCH_ID, {"name": "kind", "in": "path", "required": True,
                                       "schema": {"type": "string", "enum": ["pdf", "zip"]}}],
            "responses": {**download_responses("The file.", ["application/pdf",
                                                             "application/zip"]),
                          **errors_for(404, 409, 503)},
        }},
    }
