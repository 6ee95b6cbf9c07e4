"""huey's storage API where qrq's SQL differs from huey's ``SqliteStorage``: the
queue's sizes and listing (leased rows are not waiting), and the result store and
counters in SQL both databases accept.

``SqliteStorage`` writes two statements in SQLite's own dialect (``insert or
replace``, ``insert or abort``) and one with an unqualified column PostgreSQL finds
ambiguous; the rest of its methods are plain SQL that runs on both (PostgreSQL's
through :class:`qrq.queue.postgres_connections.QmarkCursor`).
"""

from __future__ import annotations

from huey.constants import EmptyData


class PortableHueyApi:
    """Mixed into the leased storage, before its connection layer (which gives
    ``sql``, ``db``, ``to_blob``; the storage gives ``available``)."""

    def queue_size(self):
        return self.sql(f"select count(id) from task where {self.available}",
                        (self.name,), results=True)[0][0]

    def backlog(self) -> int:
        """Rows queued or running in this queue: one scan of the (queue, priority, id)
        index, so it stays cheap however many rows wait."""
        return self.sql("select count(*) from task where queue = ?", (self.name,),
                        results=True)[0][0]

    def oldest_payloads(self, count: int) -> list[bytes]:
        """The payloads of the *count* rows queued longest (leased or not)."""
        return [data for data, in self.sql("select data from task where queue = ? "
                                           "order by id limit ?", (self.name, count),
                                           results=True)]

    def enqueued_items(self, limit=None):
        sql = (f"select data from task where {self.available} "
               "order by priority desc, id")
        params = (self.name,)
        if limit is not None:
            sql += " limit ?"
            params += (limit,)
        return [data for data, in self.sql(sql, params, results=True)]

    def pop_data(self, key):
        # huey deletes every task's revoke key after it runs; almost always there
        # is none, and this read spares a write transaction.
        if not self.has_data_for_key(key):
            return EmptyData
        rows = self.sql("delete from kv where queue = ? and key = ? returning value",
                        (self.name, key), commit=True, results=True)
        return rows[0][0] if rows else EmptyData

    def put_data(self, key, value, is_result=False):
        self.sql("insert into kv (queue, key, value) values (?, ?, ?) on conflict "
                 "(queue, key) do update set value = excluded.value",
                 (self.name, key, self.to_blob(value)), commit=True)

    def put_if_empty(self, key, value, ttl=None):
        if ttl is not None:
            raise NotImplementedError("ttl is not supported by this storage.")
        with self.db(commit=True) as curs:
            curs.execute("insert into kv (queue, key, value) values (?, ?, ?) "
                         "on conflict do nothing", (self.name, key, self.to_blob(value)))
            return curs.rowcount == 1

    def incr(self, key, amount=1):
        rows = self.sql("insert into counter (queue, key, value) values (?, ?, ?) "
                        "on conflict (queue, key) do update set value = counter.value + ? "
                        "returning value", (self.name, key, amount, amount), commit=True,
                        results=True)
        return rows[0][0]


    def claim_slot(self, name: str, slot: str) -> bool:
        """Claim periodic task *name*'s run for *slot* (an ISO minute); False when a
        scheduler (another consumer's) claimed it, or a later one, already."""
        with self.db(commit=True) as curs:
            curs.execute("insert into kv (queue, key, value) values (?, ?, ?) "
                         "on conflict (queue, key) do update set value = excluded.value "
                         "where kv.value < excluded.value",
                         (self.name, f"slot:{name}", self.to_blob(slot.encode())))
            return curs.rowcount == 1
