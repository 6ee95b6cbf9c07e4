"""Run locks and schedule state in the queue database, for backups and maintenance.

A lock (``maintenance_lock``) is held by at most one run, renewed while it runs
and lapsing if its process dies. The schedule state (``maintenance_state``: when a
schedule was first seen, the last due time claimed for a catch-up, the start of
the last successful run) lets a missed run be caught up exactly once; with the start
of the last failed run it also tells the backup alerts (:mod:`qrq.alerts`) whether the
latest backup failed and how long ago one succeeded. Both tables
are created with the rest of the schema (:mod:`qrq.queue.schema`) and changed
through the storage's connection. Each decision is one conditional upsert, so
several consumers (and the CLI) agree on who runs on SQLite and on PostgreSQL alike,
without relying on SQLite's single writer.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator

from huey.exceptions import CancelExecution

from qrq.errors import Conflict

LOCK_TTL = 60.0  # seconds a lock outlives its holder's last renewal
# How a run ended, as its body says: done, done with failures (a backup set with a
# database that did not verify), or failed without raising.
OUTCOMES = ("ok", "partial", "failed")


class Locked(Conflict):
    """Another run holds the lock."""


def _get(curs, key: str) -> float | None:
    curs.execute("select value from maintenance_state where key = ?", (key,))
    row = curs.fetchone()
    return row[0] if row else None


# -- the lock ----------------------------------------------------------------------------

def holder_id(job_id: str | None = None) -> str:
    where = f"{socket.gethostname()}:{os.getpid()}"
    return f"job {job_id} ({where})" if job_id else f"cli ({where})"


def _job_of(holder: str) -> str | None:
    """``job ID (``, the start of the holder ids of every run of job ID (None: not a
    job's)."""
    return holder[:holder.index(" (") + 2] if holder.startswith("job ") else None


def lock_ttl(storage) -> float:
    """Seconds a job's lock outlives its holder's last renewal: twice the storage's
    lease (:data:`LOCK_TTL` with the default lease), so that a lock whose process died
    lapses on the time scale on which its job runs again."""
    return 2 * getattr(storage, "lease_seconds", LOCK_TTL / 2)


def try_lock(storage, name: str, holder: str, *, ttl: float = LOCK_TTL,
             now: float | None = None) -> str | None:
    """Take lock *name* for *holder*; return ``None`` on success, else who holds it.

    A lock whose holder stopped renewing it for *ttl* seconds (its process died)
    is taken over. The same holder may take its own lock again (a job re-run).
    """
    now = time.time() if now is None else now
    with storage.db(commit=True) as curs:
        # One statement: it takes a free, lapsed or own lock and leaves a live one of
        # someone else alone, whichever of several hosts runs it at the same moment.
        curs.execute("insert into maintenance_lock (name, holder, acquired_at, expires_at) "
                     "values (?, ?, ?, ?) on conflict (name) do update set "
                     "holder = excluded.holder, acquired_at = excluded.acquired_at, "
                     "expires_at = excluded.expires_at "
                     "where maintenance_lock.holder = excluded.holder "
                     "or maintenance_lock.expires_at <= excluded.acquired_at",
                     (name, holder, now, now + ttl))
        if curs.rowcount > 0:
            return None
        curs.execute("select holder from maintenance_lock where name = ?", (name,))
        row = curs.fetchone()
    return row[0] if row else "another run"


def _wait_for_earlier_run(storage, name: str, holder: str, other: str,
                          ttl: float) -> str | None:
    """:func:`try_lock` again while *other*, an earlier run of *holder*'s job in another
    process, holds the lock, for at most *ttl*: the job runs again once that run's lease
    lapsed, so its process died, and its lock lapses within *ttl* (it was found
    "already running", its own dead run, and skipped); or that process stalled and goes
    on renewing the lock, and this run must not start beside it. Who holds it, or None."""
    deadline = time.monotonic() + ttl + 1
    while other is not None and _job_of(other) == _job_of(holder) \
            and time.monotonic() < deadline:
        time.sleep(min(1.0, ttl / 10))
        other = try_lock(storage, name, holder, ttl=ttl)
    return other


def renew_lock(storage, name: str, holder: str, ttl: float = LOCK_TTL) -> bool:
    with storage.db(commit=True) as curs:
        curs.execute("update maintenance_lock set expires_at = ? where name = ? and holder = ?",
                     (time.time() + ttl, name, holder))
        return curs.rowcount > 0


def release_lock(storage, name: str, holder: str) -> None:
    storage.sql("delete from maintenance_lock where name = ? and holder = ?", (name, holder),
                commit=True)


def release_all_locks(storage) -> int:
    """Drop every run lock: after a restore of the queue, whose locks are those of runs
    of the old system (the backup that took the set holds one), none of which goes on."""
    with storage.db(commit=True) as curs:
        curs.execute("delete from maintenance_lock")
        return curs.rowcount


@contextlib.contextmanager
def hold_lock(storage, name: str, holder: str, *, ttl: float = LOCK_TTL) -> Iterator[None]:
    """Hold lock *name* while the block runs, renewing it every third of *ttl*.

    :raises Locked: someone else holds it.
    """
    other = try_lock(storage, name, holder, ttl=ttl)
    if other is not None and _job_of(holder) is not None:
        other = _wait_for_earlier_run(storage, name, holder, other, ttl)
    if other is not None:
        raise Locked(f"{name} is already running: {other}")
    stop = threading.Event()

    def renew() -> None:
        try:
            while not stop.wait(ttl / 3):
                with contextlib.suppress(Exception):  # the next renewal may succeed
                    renew_lock(storage, name, holder, ttl)
        finally:
            storage.close()  # this thread's connection

    beat = threading.Thread(target=renew, name=f"qrq-{name}-lock", daemon=True)
    beat.start()
    try:
        yield
    finally:
        stop.set()
        beat.join()
        release_lock(storage, name, holder)


def run_exclusive(storage, name: str, job_id: str, kind: str, due_at: float | None,
                  body: Callable[[], tuple[dict, str]],
                  retried: Callable[[Exception], bool] = lambda exc: False) -> dict:
    """Run *body* under lock *name*, once per due time; return its result.

    *body* returns ``(result, outcome)``, the outcome one of :data:`OUTCOMES`. An
    ``ok`` or ``partial`` run (done, but with failures worth an alert: a backup set
    with a database that did not verify) is recorded as the last success, so a
    catch-up does not repeat it; a ``partial`` or ``failed`` run, or one that raised
    (not a cancel), as the last failure (the backup alerts read both: :func:`runs`),
    unless *retried* says the error is retried (the job's retry is then the run that
    counts: an operator is alerted when a run failed for good).
    A scheduled or catch-up run whose due time a successful run already covered,
    or that finds the lock held, is skipped (``{"skipped": why}``); a manual run
    that finds the lock held raises :class:`Locked`.
    """
    try:
        with hold_lock(storage, name, holder_id(job_id), ttl=lock_ttl(storage)):
            if kind != "manual" and due_at is not None and \
                    last_success(storage, name) >= due_at:
                return {"skipped": f"{name} already ran since it was due"}
            started = time.time()
            try:
                result, outcome = body()
            except CancelExecution:  # an operator's cancel is no failure
                raise
            except Exception as exc:
                if not retried(exc):
                    _record(storage, name, "failed", started)
                raise
            if outcome not in OUTCOMES:
                raise ValueError(f"outcome {outcome!r} is not one of {OUTCOMES}")
            if outcome != "failed":
                record_success(storage, name, started)
            if outcome != "ok":
                _record(storage, name, "failed", started)
            return result
    except Locked as exc:
        if kind == "manual":
            raise
        return {"skipped": str(exc)}


# -- catch-up ------------------------------------------------------------------------------

def claim_catch_up(storage, name: str, due: float | None, *, now: float | None = None) -> bool:
    """Whether the caller should enqueue a catch-up run of schedule *name*.

    True at most once per due time, whichever process asks first: when the last
    due time *due* passed after the schedule was first seen here, no run has
    succeeded since it, and nobody claimed it yet. The first call for a schedule
    only records when it was first seen (a new install does not run at once).
    """
    now = time.time() if now is None else now
    with storage.db(commit=True) as curs:
        curs.execute("insert into maintenance_state (key, value) values (?, ?) "
                     "on conflict (key) do nothing", (f"{name}:first_seen", now))
        if curs.rowcount > 0 or due is None:
            return False
        # The claim is one conditional upsert, so two processes asking at once (on
        # PostgreSQL they do not queue on one write lock) cannot both win it.
        curs.execute(
            "insert into maintenance_state (key, value) select ?, ? "
            "where ? > (select value from maintenance_state where key = ?) "
            "and ? > coalesce((select value from maintenance_state where key = ?), 0) "
            "on conflict (key) do update set value = excluded.value "
            "where maintenance_state.value < excluded.value",
            (f"{name}:claimed", due, due, f"{name}:first_seen", due, f"{name}:succeeded"))
        return curs.rowcount > 0


def last_success(storage, name: str) -> float:
    """When the last successful run of *name* started (0 if none)."""
    with storage.db() as curs:
        return _get(curs, f"{name}:succeeded") or 0.0


def record_success(storage, name: str, started: float) -> None:
    _record(storage, name, "succeeded", started)


def _record(storage, name: str, what: str, started: float) -> None:
    """Remember *started* as the start of the last run of *name* that *what*
    (``succeeded``, ``failed``), unless a later one is remembered."""
    with storage.db(commit=True) as curs:
        curs.execute("insert into maintenance_state (key, value) values (?, ?) "
                     "on conflict (key) do update set value = excluded.value "
                     "where maintenance_state.value < excluded.value",
                     (f"{name}:{what}", started))


def runs(storage, name: str) -> dict[str, float | None]:
    """When schedule *name* was first seen (a consumer started with it) and when its
    last successful and its last failed run started: ``{"first_seen", "succeeded",
    "failed"}``, each None if never. One read of the primary key: the alerts ask in
    every web process and consumer."""
    keys = ("first_seen", "succeeded", "failed")
    rows = storage.sql("select key, value from maintenance_state where key in (?, ?, ?)",
                       tuple(f"{name}:{key}" for key in keys), results=True)
    found = dict(rows)
    return {key: found.get(f"{name}:{key}") for key in keys}
