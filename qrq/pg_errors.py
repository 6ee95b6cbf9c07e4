"""What a PostgreSQL connection error means, in one line for the operator.

The web app, the ``qrq`` commands and the consumer start by connecting to
``QRQ_DATABASE_URL``. Whatever goes wrong there (a malformed URL, a server that
does not answer, a database that does not exist, a search_path naming no schema in
it, a login or a privilege refused) becomes one line naming the server and database,
never the password, and whether it may pass by itself (a server that is down or
restarting) or needs the operator.
"""

from __future__ import annotations

import dataclasses
import re
import select

import psycopg
import psycopg_pool
from psycopg import conninfo

# SQLSTATE classes and codes (PostgreSQL's appendix A).
_AUTH = ("28000", "28P01")  # invalid authorization, invalid password
_NO_DATABASE = "3D000"
_PRIVILEGE = "42501"
_NO_SCHEMA = "3F000"  # invalid schema name: the search_path names none that exists


@dataclasses.dataclass(frozen=True)
class DatabaseProblem:
    """*message*: one line; *lasting*: it will not pass without the operator."""

    message: str
    lasting: bool

    def __str__(self) -> str:
        return self.message


def where(url: str) -> str:
    """``database NAME on HOST:PORT`` of *url*, without user or password."""
    try:
        params = conninfo.conninfo_to_dict(url)
    except psycopg.Error:
        return "QRQ_DATABASE_URL"
    host = params.get("host") or "localhost"
    port = params.get("port") or "5432"
    return f"database {params.get('dbname') or '(default)'} on {host}:{port}"


def search_path(url: str) -> str | None:
    """The search_path *url* sets (``options=-csearch_path=...``), or None."""
    try:
        options = conninfo.conninfo_to_dict(url).get("options") or ""
    except psycopg.Error:
        return None
    found = re.search(r"search_path\s*=\s*(\S+)", options)
    return found and found.group(1)


def _chain(exc: BaseException | None):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _first_line(exc: BaseException) -> str:
    """The reason of *exc*, without libpq's "connection to server at ... failed:"."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    line = lines[0] if lines else type(exc).__name__
    if " failed: " in line:
        line = line.rsplit(" failed: ", 1)[1]
    return " ".join(line.replace("FATAL:", "").split())


def describe(exc: BaseException, url: str) -> DatabaseProblem | None:
    """The problem *exc* (or an error it was raised from) says about *url*'s database,
    or None when it is not a PostgreSQL connection or permission error."""
    for err in _chain(exc):
        if isinstance(err, psycopg_pool.PoolTimeout):
            return DatabaseProblem(f"PostgreSQL ({where(url)}) does not answer: no "
                                   "connection could be made in time", False)
        if not isinstance(err, psycopg.Error):
            continue
        text = str(err)
        state = getattr(err, "sqlstate", None)
        if state is None and (isinstance(err, psycopg.ProgrammingError)
                              or "for connection option" in text):
            return DatabaseProblem(f"QRQ_DATABASE_URL is not a valid PostgreSQL URL: "
                                   f"{_first_line(err)}", True)
        if state == _NO_DATABASE or "does not exist" in text and "database" in text:
            return DatabaseProblem(f"PostgreSQL: the {where(url)} does not exist; create "
                                   "it (createdb) or correct QRQ_DATABASE_URL", True)
        if state in _AUTH or "authentication failed" in text or (
                "role" in text and "does not exist" in text):
            return DatabaseProblem(f"PostgreSQL refused the login to the {where(url)}: "
                                   f"{_first_line(err)}", True)
        if state == _PRIVILEGE or "permission denied" in text:
            return DatabaseProblem(f"PostgreSQL: permission denied in the {where(url)}: "
                                   f"{_first_line(err)}; grant qrq's role the rights on "
                                   "its schema", True)
        if state == _NO_SCHEMA:
            named = search_path(url)
            given = (f"the search_path {named} in QRQ_DATABASE_URL" if named
                     else "the search_path (the role's or the database's default)")
            return DatabaseProblem(f"PostgreSQL: {given} names no schema that exists in the "
                                   f"{where(url)}; create the schema (create schema ...) "
                                   "or correct the search_path", True)
        if isinstance(err, psycopg.OperationalError):
            return DatabaseProblem(f"PostgreSQL ({where(url)}) is unreachable: "
                                   f"{_first_line(err)}", False)
    return None


def quiet(conn: psycopg.Connection) -> bool:
    """Whether an idle pooled connection can be lent without a round trip: nothing is
    waiting on its socket. A connection the server has ended (a restart,
    ``pg_terminate_backend``) has its goodbye or its EOF waiting there; an idle healthy
    one has nothing."""
    if conn.closed or conn.info.transaction_status != conn.info.transaction_status.IDLE:
        return False
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN | select.POLLPRI)
    return not poller.poll(0)
