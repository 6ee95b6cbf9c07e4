"""The leased storage on one SQLite file: what :class:`qrq.queue.storage.LeasedStorage`
does SQLite's way (its connections, group commit and write lock:
:mod:`qrq.queue.connections`)."""

from __future__ import annotations

import time

from qrq.queue import jobs, moved
from qrq.queue.connections import ThreadedSqliteStorage
from qrq.queue.roles import type_filter
from qrq.queue.storage import LeasedStorage


class LeasedSqliteStorage(LeasedStorage, ThreadedSqliteStorage):
    """The leased storage on one SQLite file (WAL): every write transaction takes
    the file's write lock, so a pick and its lease are never raced."""

    database = "sqlite"
    now_sql = "((julianday('now') - 2440587.5) * 86400.0)"

    def __init__(self, name="huey", filename="huey.db", **kwargs):
        super().__init__(name, filename=filename, **kwargs)

    def initialize_schema(self) -> list[int]:
        # Opened again after a move: going back. First, as the move's triggers refuse
        # the schema steps' writes too (a qrq upgraded since the move).
        if self.moved_away():
            with self.db(commit=True) as curs:
                moved.thaw(curs)
        return super().initialize_schema()

    def moved_away(self) -> bool:
        """Whether ``qrq migrate-to-postgres`` moved this queue (:mod:`qrq.queue.moved`)."""
        return bool(self.sql(moved.FIND, results=True))

    def dispose(self) -> None:
        self.stop_heartbeat()
        self.close()

    def _lease(self, curs, owner: str, blocked: tuple[str, ...],
               head_unless: tuple[str, ...] = ()) -> tuple | None:
        """Lease the first row in line not of a *blocked* type; nothing if that row is of
        a *head_unless* type (the caller counts the caps first)."""
        curs.execute(self._lease_sql(f"id = (select id {self._pick_sql(blocked)})"
                                     f"{type_filter((), head_unless)}"),
                     (self.lease_seconds, owner, *self._pick_params(blocked), *head_unless))
        leased = curs.fetchone()
        if leased is None or leased[2] is None:
            return leased and (*leased, None, None)
        return (*leased, *jobs.mark_all_running(curs, [leased[2]], owner, time.time())[leased[2]])

    def _lease_rows(self, curs, ids: list[int]) -> list[tuple]:
        curs.execute(self._lease_sql(f"id in ({','.join('?' * len(ids))})"),
                     (self.lease_seconds, self.owner, *ids))
        leased = {found[0]: found for found in curs.fetchall()}
        runs = jobs.mark_all_running(
            curs, [found[2] for found in leased.values() if found[2] is not None],
            self.owner, time.time())
        return [(*leased[row], *runs.get(leased[row][2], (None, None))) for row in ids]

    def _lease_sql(self, where: str) -> str:
        """Lease the rows *where* selects (parameters: the lease's seconds, its owner)."""
        return (f"update task set lease_until = {self.now_sql} + ?, lease_owner = ? "
                f"where {where} returning id, data, job_id")

    def _move_due(self, curs, due: tuple) -> int:
        curs.execute("insert into task (queue, data, priority, job_id, job_type) "
                     "select queue, data, priority, job_id, job_type from schedule "
                     "where queue = ? and timestamp <= ? and job_id is not null "
                     "order by timestamp, id", due)
        curs.execute("delete from schedule where queue = ? and timestamp <= ? "
                     "and job_id is not null", due)
        return curs.rowcount
