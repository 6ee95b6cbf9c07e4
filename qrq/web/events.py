"""``GET /api/jobs/<id>/events``: a job's progress, stage and status as Server-Sent Events.

Each event's id is the state it carries, so a client that reconnects with
``Last-Event-ID`` gets the next event only when the job has moved on (states it
missed meanwhile are not replayed: only the latest matters). The stream ends
with an ``end`` event holding the final job record. It also ends after
:data:`STREAM_SECONDS`, with a ``retry`` hint, so no client holds a server thread
for long; EventSource reconnects by itself. A resumed stream of an ended job whose
``end`` the client has seen answers ``204``, which stops EventSource.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

from flask import Blueprint, Response, current_app, request, stream_with_context

from qrq.appdb.db import app_db
from qrq.queue import huey, jobs
from qrq.web.api import job_view, visible_job, watcher
from qrq.web.auth import login_required

bp = Blueprint("events", __name__, url_prefix="/api")

STREAM_SECONDS = 55
RECONNECT_MS = 1000


def event_id(job: dict) -> str:
    return f"{job['status']}.{job['progress']}.{job['attempts']}"


def _event(name: str, ident: str, data: dict) -> str:
    return f"id: {ident}\nevent: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


@bp.get("/jobs/<job_id>/events")
@login_required
def job_events(job_id: str):
    """A stream of ``state`` events (status, progress, stage) ending with ``end``."""
    job = visible_job(job_id)
    last = request.headers.get("Last-Event-ID")
    if job["status"] in jobs.ENDED and last == event_id(job):
        return Response(status=204)
    slots = current_app.extensions["qrq_waiters"]

    def stream() -> Iterator[str]:
        nonlocal job
        waiting = slots.take()  # here, not before: a stream never started takes none
        # The user is loaded; the app database is not needed while the stream lasts.
        if not app_db.is_closed():
            app_db.close()
        try:
            yield f"retry: {RECONNECT_MS}\n\n"
            seen = last
            deadline = time.monotonic() + (STREAM_SECONDS if waiting else 0)
            while True:
                ident = event_id(job)
                if job["status"] in jobs.ENDED:
                    yield _event("end", ident, job_view(job))
                    return
                if ident != seen:
                    yield _event("state", ident, {"job_id": job["id"],
                                                  "status": job["status"],
                                                  "progress": job["progress"],
                                                  "stage": job["stage"]})
                    seen = ident
                left = deadline - time.monotonic()
                if left <= 0:
                    return  # the client reconnects with Last-Event-ID
                state = (job["status"], job["progress"], job["stage"])
                watcher.wait_change(job["id"], state, min(left, 15))
                fresh = jobs.get(huey.storage, job["id"])
                if fresh is None:
                    return
                if fresh == job:
                    yield ": keep-alive\n\n"
                job = fresh
        finally:
            if waiting:
                slots.give_back()

    response = Response(stream_with_context(stream()), mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"  # nginx: pass each event on at once
    return response
