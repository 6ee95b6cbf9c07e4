"""The audit log: who did what to which jobs, from the dashboard, the admin API or the CLI.

One call per action, inside its transaction (given the cursor) where the caller holds
it, else after the action committed: the row then commits on its own, and a failure to
write it is logged, never raised, so a done action is still reported as done (the
actions of the dashboard, admin API and CLI are huey calls and loops over them that
commit themselves)::

    audit.record(huey.storage, user.name, "job.retry", job_ids=[job_id])

The actor is a user name, or ``cli:<os user>`` for the command line. ``job_ids``
keeps the first :data:`MAX_IDS` ids; ``job_count`` is the true total. ``detail`` is
a small dict of what else the action was given (a type filter, an age, a role ...).
Rows leave with ended jobs (:func:`qrq.queue.retention.apply_retention`).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterable
from typing import Any

# The ids kept per row: enough to follow up on a retry-all, bounded for a huge purge.
MAX_IDS = 100
MAX_DETAIL = 2000

logger = logging.getLogger("qrq.queue.audit")

_INSERT = ("insert into audit (id, created_at, actor, action, job_count, job_ids, detail) "
           "values (?, ?, ?, ?, ?, ?, ?)")


def record(target, actor: str, action: str, *, job_ids: Iterable[str] = (),
           count: int | None = None, detail: dict[str, Any] | None = None,
           now: float | None = None) -> None:
    """Write one audit row for *action* (``"job.retry"``, ``"jobs.purge"`` ...) by *actor*.

    :param target: a cursor inside the action's own transaction (the row commits with
        it, an error rolls both back), or the queue storage after the action committed
        (the row commits on its own; an error is logged with the row, not raised).
    :param job_ids: the jobs acted on; the first :data:`MAX_IDS` are kept.
    :param count: how many jobs the action touched, when *job_ids* does not say
        (a purge knows only how many it deleted); default ``len(job_ids)``.
    """
    ids = list(job_ids)
    text = json.dumps(detail or {}, sort_keys=True, default=str)
    if len(text) > MAX_DETAIL:
        text = json.dumps({"truncated": text[:MAX_DETAIL]})
    row = (uuid.uuid4().hex, time.time() if now is None else now, actor[:100], action[:64],
           len(ids) if count is None else count, json.dumps(ids[:MAX_IDS]), text)
    if hasattr(target, "db"):
        try:
            with target.db(commit=True) as curs:
                curs.execute(_INSERT, row)
        except Exception:  # any database error: the action itself is done
            logger.exception("audit row not written: %s by %s on %d job(s) %s %s",
                             row[3], row[2], row[4], row[5], row[6])
    else:
        target.execute(_INSERT, row)


def _where(actor: str | None, action: str | None) -> tuple[str, list[Any]]:
    clauses, params = [], []
    if actor:
        clauses.append("actor = ?")
        params.append(actor)
    if action:
        clauses.append("action = ?")
        params.append(action)
    return (" where " + " and ".join(clauses)) if clauses else "", params


def entries(storage, actor: str | None = None, action: str | None = None,
            limit: int = 50, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """One page of audit rows, newest first, of one *actor* and/or *action*, and how
    many match: ``([{"id", "created_at", "actor", "action", "job_count", "job_ids",
    "detail"}], total)``."""
    where, params = _where(actor, action)
    total = storage.sql(f"select count(*) from audit{where}", params, results=True)[0][0]
    rows = storage.sql(
        "select id, created_at, actor, action, job_count, job_ids, detail from audit"
        f"{where} order by created_at desc, id desc limit ? offset ?",
        [*params, limit, offset], results=True)
    return [{"id": row[0], "created_at": row[1], "actor": row[2], "action": row[3],
             "job_count": row[4], "job_ids": json.loads(row[5]),
             "detail": json.loads(row[6])} for row in rows], total


def actors_and_actions(storage) -> tuple[list[str], list[str]]:
    """The distinct actors and actions on record, sorted (the page's filter choices)."""
    actors = [a for a, in storage.sql("select distinct actor from audit order by actor",
                                      results=True)]
    actions = [a for a, in storage.sql("select distinct action from audit order by action",
                                       results=True)]
    return actors, actions


def purge_before(storage, cutoff: float) -> int:
    """Delete the rows recorded before *cutoff* (epoch seconds); return how many went."""
    with storage.db(commit=True) as curs:
        curs.execute("delete from audit where created_at < ?", (cutoff,))
        return curs.rowcount
