"""What the job page shows of a job's result, laid out per job type, and its attempts.

A PDF shows its pages, cards, size and download; a batch its counts, files and
completion mail; an analytics report its buckets, top lists and a link to its chart;
a backup one row per database. Any other result (and one these do not recognise,
say from an older version) is shown as a key/value table by the template; the raw
JSON stays behind a toggle.
"""

from __future__ import annotations

from typing import Any

from flask import current_app, url_for

from qrq.backup.sets import set_exists
from qrq.queue import attempts, huey, jobs
from qrq.web.dashboard.blueprint import bp

# Task name -> the layout of its result (templates/admin/_job_result.html).
LAYOUTS = {"pdf.generate": "pdf", "batch.generate": "batch",
           "analytics.time_based": "analytics", "backup.run": "backup",
           "backup.scheduled": "backup"}
# A result must have these keys for its layout; otherwise it is shown as a table.
_NEEDS = {"pdf": ("pages", "bytes"), "batch": ("total", "completed", "failed"),
          "analytics": ("series", "top"), "backup": ("set_id", "databases")}


def _file(outputs: dict[str, dict[str, Any]], name: Any) -> dict[str, Any] | None:
    """The listed output *name* (with its size on disk), None when it is gone."""
    return outputs.get(name) if isinstance(name, str) else None


def _pdf(job: dict[str, Any], result: dict[str, Any],
         outputs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {"pages": result["pages"], "cards": result.get("cards"), "bytes": result["bytes"],
            "file": _file(outputs, result.get("artifact"))}


def _batch(job: dict[str, Any], result: dict[str, Any],
           outputs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    files = []
    for kind in ("pdf", "zip"):
        info = result.get(kind)
        if isinstance(info, dict):
            contents = (f"{info.get('pages', '?')} page(s), {info.get('cards', '?')} card(s)"
                        if kind == "pdf" else
                        f"{info.get('files', '?')} file(s), "
                        + " and ".join(f.upper() for f in info.get("formats") or ["svg"]))
            files.append({"kind": kind.upper(), "contents": contents,
                          "bytes": info.get("bytes"), "file": _file(outputs, info.get("file")),
                          "name": info.get("file")})
    mail_id = result.get("mail_job_id")
    mail = jobs.get(huey.storage, mail_id) if isinstance(mail_id, str) else None
    to = jobs.public_view(mail)["params"].get("to") if mail else None
    return {"total": result["total"], "completed": result["completed"],
            "failed": result["failed"], "rate": result.get("success_rate"), "files": files,
            "mail": {"id": mail_id, "status": mail["status"] if mail else None,
                     "to": [to] if isinstance(to, str) else to},
            "parent": result.get("parent_job_id"), "resumed_after": result.get("resumed_after"),
            "encoded": result.get("encoded_this_run"), "seconds": result.get("seconds") or {}}


def _analytics(job: dict[str, Any], result: dict[str, Any],
               outputs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    query = result.get("params") if isinstance(result.get("params"), dict) else {}
    chart_args = {key: value for key, value in query.items() if value not in (None, "")}
    top = {name: [(next((v for k, v in row.items() if k != "scans"), None), row.get("scans"))
                  for row in rows if isinstance(row, dict)]
           for name, rows in (result["top"] or {}).items() if isinstance(rows, list)}
    return {"series": result["series"], "totals": result.get("totals") or {}, "top": top,
            "databases": result.get("databases") or {}, "warnings": result.get("warnings") or [],
            "seconds": result.get("seconds"), "query": query,
            "chart_url": url_for("analytics.chart_page", **chart_args)}


def _backup(job: dict[str, Any], result: dict[str, Any],
            outputs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    # The report is the run's; the sets it names may have been removed since. Only a
    # host that keeps the sets can tell (on several hosts they are on the worker's).
    backups = current_app.config["QRQ"].backups_dir
    here = backups.is_dir()
    rows = []
    for entry in result["databases"]:
        if not isinstance(entry, dict):
            continue
        note = entry.get("note") or ""
        reused = entry.get("reused_from") or (
            note.split("reused from set ", 1)[1].split(":", 1)[0]
            if note.startswith("reused from set ") else None)  # results before reused_from
        rows.append({**entry, "reused_from": reused,
                     "reused_removed": here and bool(reused) and not set_exists(backups, reused)})
    return {**{key: result.get(key) for key in ("set_id", "kind", "status", "ok", "failed",
                                                 "size", "compressed_size", "duration",
                                                 "removed_sets", "mailed")},
            "set_removed": here and not set_exists(backups, result["set_id"]),
            "databases": rows}


_BUILDERS = {"pdf": _pdf, "batch": _batch, "analytics": _analytics, "backup": _backup}


def result_layout(job: dict[str, Any], result: Any,
                  outputs: list[dict[str, Any]]) -> tuple[str, dict[str, Any] | None]:
    """``(layout, shown)``: which section the template renders and what it needs; the
    layout is ``"table"`` (shown None) for any result the job's own layout cannot read."""
    layout = LAYOUTS.get(job["name"])
    if layout is None or not isinstance(result, dict) or \
            not all(key in result for key in _NEEDS[layout]):
        return "table", None
    try:
        return layout, _BUILDERS[layout](job, result, {o["name"]: o for o in outputs})
    except (KeyError, TypeError, ValueError, AttributeError, IndexError):
        return "table", None  # a result of another shape (another version): as a table


def attempt_rows(job_id: str) -> list[dict[str, Any]]:
    """The job's attempts, each with how long it took (None while it runs)."""
    return [{**row, "took": None if row["ended_at"] is None
             else max(0.0, row["ended_at"] - row["started_at"])}
            for row in attempts.list_attempts(huey.storage, job_id)]


def timings(job: dict[str, Any], attempt_list: list[dict[str, Any]],
            now: float) -> dict[str, float | None]:
    """How long *job* waited before its first run; how long its latest run has been
    running (while it runs) or ran (once the job ended with that run); None where it
    does not apply (a job waiting for its retry is not running). *attempt_list* is
    :func:`attempt_rows`: a retried job's ``started_at`` is its latest run's, a job
    retried by itself keeps its first run's."""
    first = attempt_list[0]["started_at"] if attempt_list else job["started_at"]
    latest = attempt_list[-1] if attempt_list else None
    running = ran = None
    if job["status"] == "running":
        start = latest["started_at"] if latest and latest["ended_at"] is None \
            else job["started_at"]
        running = max(0.0, now - start) if start else None
    elif job["finished_at"] is not None:
        if latest is None:
            ran = job["finished_at"] - job["started_at"] if job["started_at"] else None
        elif latest["ended_at"] is not None and \
                abs(latest["ended_at"] - job["finished_at"]) < 1:  # not canceled later
            ran = latest["took"]
    return {"waited": max(0.0, (first or job["finished_at"] or now) - job["created_at"]),
            "running": running, "ran": None if ran is None else max(0.0, ran)}


@bp.app_template_filter("record_columns")
def record_columns(values: Any) -> list[str]:
    """The columns of a list of records (each key, in order of first appearance), or []
    when *values* is not a non-empty list of non-empty dicts (then it is shown inline)."""
    if not isinstance(values, list) or not values or \
            not all(isinstance(v, dict) and v for v in values):
        return []
    return list(dict.fromkeys(key for value in values for key in value))
