"""``GET /api/jobs/<id>/events``: a job's progress, stage and status as Server-Sent Events.

Each event's id is the state it carries, so a client that reconnects with
``Last-Event-ID`` gets the next event only when the job has moved on (states it
missed meanwhile are not replayed: only the latest matters). The stream ends
with an ``end`` event holding the final job record. It also ends after
:data:`STREAM_SECONDS`, with a ``retry`` hint; EventSource reconnects by itself.
A resumed stream of an ended job whose ``end`` the client has seen answers
``204``, which stops EventSource.

The body runs after its request has ended (it reads the queue database only,
with what it needs from the request read beforehand). Between events it waits
parked under qrq's server, holding no thread (:mod:`qrq.web.waiting`); under
another server it holds its thread, within ``QRQ_MAX_WAITERS``.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Iterator

from flask import Blueprint, Response, current_app, request, url_for

from qrq.analytics import requesters
from qrq.queue import huey, jobs
from qrq.web import waiting
from qrq.web.analytics import shared_view
from qrq.web.api import view_of, visible_job, watcher
from qrq.web.auth import current_user, login_required

bp = Blueprint("events", __name__, url_prefix="/api")

STREAM_SECONDS = 55
KEEP_ALIVE_SECONDS = 15
RECONNECT_MS = 1000


# The id of the end event of a requester who withdrew from a shared job still running.
WITHDRAWN = "withdrawn"


def event_id(job: dict) -> str:
    return f"{job['status']}.{job['progress']}.{job['attempts']}"


def _event(name: str, ident: str, data: dict) -> str:
    return f"id: {ident}\nevent: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def _followed(job_id: str) -> tuple[dict, Callable[[dict], dict], Callable[[], bool]]:
    """The job the caller may follow, how the caller sees it, and whether the caller
    withdrew from it (made from the request: the stream runs after it ended). An
    analytics job is shared: any signed-in user follows it, as at its ``status_url``,
    and a requester who withdrew sees it canceled; other jobs are their owner's."""
    user = current_user()
    job = jobs.get(huey.storage, job_id)
    if job is not None and job["type"] == "analytics":
        status_url = url_for("analytics.job_status", job_id=job_id)
        return (job, functools.partial(shared_view, user_id=user.id, admin=user.is_admin,
                                       status_url=status_url),
                functools.partial(requesters.has_withdrawn, huey.storage, job_id, user.id))
    job = visible_job(job_id)
    return (job, functools.partial(view_of, admin=user.is_admin,
                                   status_url=url_for("api.job_status", job_id=job_id),
                                   download_url=url_for("api.download", job_id=job_id)),
            lambda: False)


@bp.get("/jobs/<job_id>/events")
@login_required
def job_events(job_id: str):
    """A stream of ``state`` events (status, progress, stage) ending with ``end``."""
    job, view, withdrew = _followed(job_id)
    last = request.headers.get("Last-Event-ID")
    if (job["status"] in jobs.ENDED and last == event_id(job)) or (
            last == WITHDRAWN and withdrew()):
        nothing = Response(status=204)
        del nothing.headers["Content-Type"]  # no body, so no type (not text/html)
        return nothing
    parks = waiting.can_park(request.environ)
    slots = current_app.extensions["qrq_waiters"]

    def stream() -> Iterator[str | waiting.Park]:
        nonlocal job
        # A slot only where waiting holds a thread, taken here: a stream never started
        # takes none.
        held = not parks and slots.take()
        try:
            yield f"retry: {RECONNECT_MS}\n\n"
            seen = last
            deadline = time.monotonic() + (STREAM_SECONDS if parks or held else 0)
            while True:
                ident = event_id(job)
                if job["status"] in jobs.ENDED:
                    yield _event("end", ident, view(job))
                    return
                if withdrew():
                    yield _event("end", WITHDRAWN, view(job))
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
                timeout = min(left, KEEP_ALIVE_SECONDS)
                if parks:
                    yield waiting.Park(watcher.subscriber(job["id"], state, timeout))
                else:
                    watcher.wait_change(job["id"], state, timeout)
                fresh = jobs.get(huey.storage, job["id"])
                if fresh is None:
                    return
                if fresh == job:
                    yield ": keep-alive\n\n"
                job = fresh
        finally:
            if held:
                slots.give_back()

    response = Response(stream(), mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"  # nginx: pass each event on at once
    return response
