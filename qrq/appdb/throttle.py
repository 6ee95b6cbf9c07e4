"""Throttling of failed log-ins and bad API tokens, per client address.

The counts live in the app database so every web worker and host shares them. A
good request pays one primary-key read (:func:`check`, or :func:`token_user` that reads
the block and the token's user in one statement); only a failure writes.
After ``LIMIT`` failures within ``WINDOW`` seconds the address is refused for
``BLOCK`` seconds, good token or not, so guessing cannot go on in the refusals.
"""

from __future__ import annotations

import math
import time

from qrq.appdb.database import app_db, sql
from qrq.appdb.models import Throttle, User, hash_token
from qrq.errors import TooManyAttempts

LIMIT = 10
WINDOW = 300.0
BLOCK = 60.0
# Rows of addresses quiet this long are deleted on the next failure.
FORGET_AFTER = 86400.0

_TABLE = Throttle._meta.table_name
_BLOCKED = f'select blocked_until from "{_TABLE}" where address = ? and blocked_until > ?'
# One statement, so concurrent failures from several workers all count. The old row's
# columns are named with the table (PostgreSQL finds a bare name ambiguous here).
_OLD = f'"{_TABLE}".'
_RECORD = (
    f'insert into "{_TABLE}" (address, failures, window_start, blocked_until) '
    "values (?, 1, ?, 0) on conflict(address) do update set "
    f"failures = case when {_OLD}window_start < ? then 1 else {_OLD}failures + 1 end, "
    f"window_start = case when {_OLD}window_start < ? then ? else {_OLD}window_start end, "
    f"blocked_until = case when (case when {_OLD}window_start < ? then 1 "
    f"else {_OLD}failures + 1 end) >= ? then ? else {_OLD}blocked_until end")


def check(address: str | None, now: float | None = None) -> None:
    """Refuse an address that failed too often lately.

    :raises TooManyAttempts: with the seconds to wait (``retry_after``).
    """
    now = time.time() if now is None else now
    # A bare statement, not a model query: every authenticated request runs it.
    row = app_db.execute_sql(sql(_BLOCKED), ((address or "-")[:64], now)).fetchone()
    if row is not None:
        raise TooManyAttempts(retry_after=max(1, math.ceil(row[0] - now)))


# The address's block and the token's user in one statement (one round trip on
# PostgreSQL, not two): both left-joined to a single row, so it always answers.
_USER_COLUMNS = ", ".join(f'u."{field.column_name}"' for field in User._meta.sorted_fields)
_USER_AND_BLOCK = (
    f"select t.blocked_until as blocked_until_, {_USER_COLUMNS} from (select 1 as one) as o "
    f'left join "{_TABLE}" as t on t.address = ? and t.blocked_until > ? '
    f'left join "{User._meta.table_name}" as u on u.token_hash = ?')


def token_user(address: str | None, token: str, now: float | None = None) -> User | None:
    """The user of *token*, or None; checks *address* first as :func:`check` does.

    :raises TooManyAttempts: with the seconds to wait (``retry_after``).
    """
    now = time.time() if now is None else now
    row = next(iter(User.raw(sql(_USER_AND_BLOCK),
                             (address or "-")[:64], now, hash_token(token))))
    if row.blocked_until_ is not None:
        raise TooManyAttempts(retry_after=max(1, math.ceil(row.blocked_until_ - now)))
    return row if row.id is not None else None


def record_failure(address: str | None, now: float | None = None) -> None:
    """Count a failed log-in or bad token from *address*; block it at ``LIMIT``."""
    now = time.time() if now is None else now
    window = now - WINDOW
    with app_db.atomic():
        app_db.execute_sql(sql(_RECORD), ((address or "-")[:64], now, window, window, now, window,
                                     LIMIT, now + BLOCK))
        Throttle.delete().where((Throttle.window_start < now - FORGET_AFTER)
                                & (Throttle.blocked_until < now)).execute()
