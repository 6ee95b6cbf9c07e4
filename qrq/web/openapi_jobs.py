"""OpenAPI pieces for following jobs and paging lists (issue 17): the paging
parameters and headers every list shares, ``?wait=``, the events stream, webhook
settings, ``callback_url``, the deliveries themselves (the ``webhooks`` section) and
the backups list. ``qrq/web/openapi.py`` assembles them into the document."""

from __future__ import annotations

from typing import Any

from qrq import webhooks as hooks
from qrq.queue.catalog import task_spec
from qrq.web.backups_api import KINDS, STATUSES
from qrq.web.openapi_parts import errors_for
from qrq.web.paging import MAX_CURSOR_CHARS
from qrq.web.waiting import MAX_WAIT_SECONDS


def limit_param(default: int, most: int) -> dict[str, Any]:
    return {"name": "limit", "in": "query", "description": "Items per page.",
            "schema": {"type": "integer", "minimum": 1, "maximum": most, "default": default}}


CURSOR = {"name": "cursor", "in": "query",
          "description": "Opaque: the cursor of the previous page's `next` link, as given "
                         "(anything else is a 422).",
          "schema": {"type": "string", "maxLength": MAX_CURSOR_CHARS}}
NEXT = {"type": ["string", "null"],
        "description": "The next page's path and query, without scheme or host, to follow "
                       "as given under the URL the API is reached at (null: this is the "
                       "last page); also sent, absolute, as `Link: <...>; rel=\"next\"`."}
LINK_HEADER = {"Link": {"schema": {"type": "string"},
                        "description": 'The next page: `<URL>; rel="next"`, the URL on '
                                       "the server's QRQ_BASE_URL when it sets one, else "
                                       "on the request's scheme and Host."}}
WAIT = {"name": "wait", "in": "query",
        "description": "Long-poll: answer at the job's next status change (or at once if "
                       f"it has ended), else after this many seconds (at most "
                       f"{MAX_WAIT_SECONDS}). Busy servers answer at once "
                       "(QRQ_MAX_WAITERS).",
        "schema": {"type": "integer", "minimum": 0, "maximum": MAX_WAIT_SECONDS,
                   "default": 0}}
CALLBACK_URL = {
    "type": ["string", "null"], "maxLength": 2000,
    "description": "Webhook: POSTed the final job record when the job ends, signed "
                   "(the `jobEnded` webhook of this document). Private, loopback and link-local "
                   "hosts are a 422 unless the server allows them. Absent: your default "
                   "(PUT /api/me/webhook); null: none."}
_ATTEMPT = {"type": "object", "additionalProperties": False,
            "required": ["n", "started_at", "ended_at", "outcome", "error"],
            "properties": {
                "n": {"type": "integer", "minimum": 1, "description": "1 for the first run."},
                "worker": {"type": ["string", "null"], "description": "Admins only."},
                "started_at": {"type": "string", "format": "date-time"},
                "ended_at": {"type": ["string", "null"], "format": "date-time",
                             "description": "null while it runs."},
                "outcome": {"type": ["string", "null"], "enum": [
                    "finished", "failed", "canceled", "expired", "released", "lost", None],
                    "description": "null while it runs; released: given back unfinished "
                                   "(a consumer stopping), to run again; lost: its lease "
                                   "lapsed and another run took over."},
                "error": {"type": ["string", "null"]}}}
ATTEMPTS_HISTORY = {"type": "array", "items": _ATTEMPT,
                    "description": "Each run of the job, first first (GET of one job only); "
                                   "`attempts` counts the runs that count toward retries."}
_WEBHOOK = {"type": "object", "additionalProperties": False,
            "required": ["callback_url", "secret", "signature"],
            "properties": {"callback_url": {"type": ["string", "null"]},
                           "secret": {"type": "string"}, "signature": {"type": "string"}}}
_BACKUP = {"type": "object", "required": ["id", "kind", "created_at", "status", "databases"],
           "properties": {"id": {"type": "string"}, "kind": {"type": "string"},
                          "created_at": {"type": "string"}, "status": {"type": "string"},
                          "databases": {"type": "array", "items": {"type": ["string", "null"]}}}}


def paths() -> dict[str, Any]:
    job_id = {"name": "job_id", "in": "path", "required": True,
              "schema": {"type": "string", "maxLength": 100}}
    return {
        "/api/jobs/{job_id}/events": {"get": {
            "summary": "A job's progress, stage and status as Server-Sent Events",
            "description": "`state` events (status, progress, stage; the id is the state) "
                           "and a last `end` event with the final job record. A stream "
                           "lasts at most about a minute; reconnect with `Last-Event-ID` "
                           "(EventSource does) to go on from the state you have. 204: the "
                           "job ended and `Last-Event-ID` is its end. For the job's owner "
                           "(and admins), or any signed-in user for an analytics job "
                           "(shared; `canceled` for a requester who withdrew).",
            "operationId": "streamJobEvents",
            "parameters": [job_id, {"name": "Last-Event-ID", "in": "header",
                                    "schema": {"type": "string", "maxLength": 200}}],
            "responses": {"200": {"description": "The event stream.", "content": {
                "text/event-stream": {"schema": {
                    "type": "object", "description": "One event; `data` is JSON.",
                    "properties": {"event": {"type": "string", "enum": ["state", "end"]},
                                   "id": {"type": "string"}, "data": {"type": "string"},
                                   "retry": {"type": "integer"}}}}}},
                "204": {"description": "Nothing more: the job's end was seen."},
                **errors_for(404)},
        }},
        "/api/me/webhook": {
            "get": {"summary": "Your default callback URL and your webhook secret",
                    "operationId": "getWebhookSettings",
                    "responses": {"200": {"description": "The settings.", "content": {
                        "application/json": {"schema": _WEBHOOK}}}}},
            "put": {"summary": "Set your default callback URL (null: none)",
                    "operationId": "setWebhookSettings",
                    "requestBody": {"required": True, "content": {"application/json": {
                        "schema": {"type": "object", "additionalProperties": False,
                                   "required": ["callback_url"],
                                   "properties": {"callback_url": CALLBACK_URL}}}}},
                    "responses": {"200": {"description": "The settings.", "content": {
                        "application/json": {"schema": _WEBHOOK}}},
                        **errors_for(400, 413, 422, 503)}},
        },
        "/api/me/webhook/secret": {"post": {
            "summary": "Replace your webhook secret (one that leaked)",
            "description": "Every delivery from now on, those already queued too, is signed "
                           "with the new secret; the old one signs nothing more. No body.",
            "operationId": "replaceWebhookSecret",
            "responses": {"200": {"description": "The settings, with the new secret.",
                                  "content": {"application/json": {"schema": _WEBHOOK}}},
                          **errors_for(503)}}},
        "/api/admin/backups": {"get": {
            "summary": "Backup sets, newest first (admins)",
            "operationId": "listBackups",
            "parameters": [
                {"name": "kind", "in": "query", "schema": {"type": "string",
                                                          "enum": list(KINDS)}},
                {"name": "status", "in": "query", "schema": {"type": "string",
                                                            "enum": list(STATUSES)}},
                limit_param(50, 200), CURSOR],
            "responses": {"200": {"description": "Sets (their databases by name).",
                                  "headers": LINK_HEADER, "content": {"application/json": {
                                      "schema": {"type": "object",
                                                 "required": ["backups", "limit", "next"],
                                                 "properties": {
                                                     "backups": {"type": "array",
                                                                 "items": _BACKUP},
                                                     "limit": {"type": "integer"},
                                                     "next": NEXT,
                                                     "sets_here": {
                                                         "type": "boolean",
                                                         "description": "false: this host "
                                                         "keeps no backup sets (they are on "
                                                         "the host that runs the backups)"}}}}}},
                          **errors_for(403, 422)},
        }},
    }


def _header(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "header", "required": True, "schema": schema,
            "description": description}


def webhooks() -> dict[str, Any]:
    """The document's ``webhooks``: what qrq POSTs to a callback URL (qrq.webhooks)."""
    retries = task_spec(hooks.DELIVERY_TASK).retries
    return {"jobEnded": {"post": {
        "summary": "A job ended: its final record, POSTed to its callback URL",
        "description": "Sent once the job is finished, failed, canceled or expired, by a "
                       "`webhook` job of the job's owner. Redirects are not followed.",
        "operationId": "jobEnded",
        "security": [],  # the receiver checks X-Qrq-Signature instead
        "parameters": [
            _header("X-Qrq-Timestamp", {"type": "string", "pattern": "^[0-9]+$"},
                    "Unix seconds of this attempt; refuse an old one (a replay)."),
            _header("X-Qrq-Signature", {"type": "string", "pattern": "^v1=[0-9a-f]{64}$"},
                    "`v1=` + hex HMAC-SHA256 of `<X-Qrq-Timestamp>.` + the body, keyed "
                    "with your webhook secret (GET /api/me/webhook)."),
            _header("X-Qrq-Delivery", {"type": "string", "format": "uuid"},
                    "The id of the delivery's `webhook` job: the same on each retry."),
            _header("User-Agent", {"const": hooks.USER_AGENT}, "qrq's deliveries."),
        ],
        "requestBody": {"required": True, "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/WebhookDelivery"}}}},
        "responses": {
            "2XX": {"description": "Received: not sent again."},
            "default": {"description": f"Any other status, or no answer within "
                                       f"{hooks.TIMEOUT_SECONDS:g} s: sent again, at most "
                                       f"{retries} times, with doubling delays."}},
    }}}
