"""One-row records of what every host must agree on, written by the first process that
opens the queue: the signing key's fingerprint (``queue_key``, :mod:`qrq.queue.signing`)
and the artifact store's marker (``artifact_store``, :mod:`qrq.artifacts.identity`).
Each table has ``id`` (always 1), its own columns, ``host`` and ``recorded_at``."""

from __future__ import annotations

import socket
import time
from typing import Any


def read(storage, table: str, columns: tuple[str, ...]) -> dict[str, Any] | None:
    """The record of *table* (its *columns*, ``host``, ``recorded_at``), or None."""
    names = (*columns, "host", "recorded_at")
    rows = storage.sql(f"select {', '.join(names)} from {table}", results=True)
    return dict(zip(names, rows[0], strict=True)) if rows else None


def write(storage, table: str, values: dict[str, Any], replace: bool = False) -> dict[str, Any]:
    """Record *values* from this host, unless a record exists (or over it, if *replace*);
    return the record now in place (another process's, if it came first)."""
    names = (*values, "host", "recorded_at")
    conflict = ("do update set " + ", ".join(f"{n} = excluded.{n}" for n in names)
                if replace else "do nothing")
    storage.sql(f"insert into {table} (id, {', '.join(names)}) values "
                f"(1, {', '.join('?' * len(names))}) on conflict (id) {conflict}",
                (*values.values(), socket.gethostname()[:64], time.time()), commit=True)
    return read(storage, table, tuple(values))


def withdraw(storage, table: str, column: str, value: Any) -> None:
    """Delete the record of *table* if its *column* still holds *value* (this host's,
    when what it stands for could not be completed)."""
    storage.sql(f"delete from {table} where {column} = ?", (value,), commit=True)


def by_whom(record: dict[str, Any]) -> str:
    """"web-1 on 2026-12-05 11:00 UTC": which host made *record*, and when."""
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(record["recorded_at"]))
    return f"{record['host'] or 'a host'} on {when}"
