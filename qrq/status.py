"""The queue-status document: what ``GET /api/admin/queue-status`` answers and
``qrq status --json`` prints, built in one place so the two never drift apart."""

from __future__ import annotations

import time
from typing import Any

from qrq.config import Settings
from qrq.queue import pauses, stats
from qrq.queue.jobs import iso


def _with_age_in_seconds(counts: dict[str, Any]) -> dict[str, Any]:
    view = dict(counts)
    age = view.pop("oldest_queued_age")
    view["oldest_queued_age_seconds"] = None if age is None else round(age, 3)
    return view


def queue_status_document(storage, settings: Settings, firing: list[dict[str, Any]],
                          now: float | None = None) -> dict[str, Any]:
    """Job counts per type and in total, the consumers with their current jobs, and the
    alerts *firing* (as :func:`qrq.alerts.record` returns them), the paused types: ISO
    times, ages in seconds, plain JSON values."""
    now = time.time() if now is None else now
    status = stats.queue_status(storage, now)
    paused = pauses.paused(storage)
    return {
        "generated_at": iso(status["generated_at"]),
        "types": {job_type: {**_with_age_in_seconds(counts),
                             "paused": any(p["type"] == job_type for p in paused)}
                  for job_type, counts in status["types"].items()},
        "totals": _with_age_in_seconds(status["totals"]),
        "consumers": [{
            "id": c["id"], "host": c["host"], "pid": c["pid"], "workers": c["workers"],
            "started_at": iso(c["started_at"]), "last_heartbeat": iso(c["heartbeat_at"]),
            "heartbeat_age_seconds": round(c["heartbeat_age"], 3),
            "alive": c["heartbeat_age"] <= settings.alert_heartbeat_age,
            # Its role (qrq worker --types / --exclude-types): empty lists take every type.
            "job_types": list(c["job_types"] or ()),
            "exclude_job_types": list(c["exclude_job_types"] or ()),
            "current_jobs": [{"job_id": j["job_id"], "type": j["type"], "name": j["name"],
                              "progress": j["progress"], "stage": j["stage"],
                              "started_at": iso(j["started_at"])} for j in c["jobs"]],
        } for c in status["consumers"]],
        "alerts": [{"kind": a["kind"], "message": a["message"], "since": iso(a.get("since"))}
                   for a in firing],
        "paused": [{**p, "paused_at": iso(p["paused_at"])} for p in paused],
    }
