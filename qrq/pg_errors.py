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
import urllib.parse

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


# libpq's complaints about a URL it cannot parse, as plain reasons. libpq quotes the
# offending part, which may be the password or the whole URL: none of it is repeated.
_URL_MISTAKES = (
    ("invalid percent-encoded token", "a bad percent-encoding (a % in the user name, "
     "password or database name must be written %25)"),
    ("forbidden value %00", "a %00 (a NUL byte) in a percent-encoded part"),
    ('looking for matching "]"', "an IPv6 host address without its closing ]"),
    ("IPv6 host address may not be empty", "an empty IPv6 host address []"),
    ("unexpected character", "an unexpected character after the host (a port follows "
     "a :, the database name a /)"),
    ("extra key/value separator", "a query parameter with more than one ="),
    ("missing key/value separator", "a query parameter without ="),
    ("invalid URI query parameter", "an unknown query parameter (libpq's parameters: "
     "sslmode, connect_timeout, options, ...)"),
)


def url_mistake(url: str) -> str | None:
    """What makes *url* not a valid PostgreSQL URL, in words that repeat no part of it;
    None when libpq reads it as written. An unencoded / or @ in the user name or
    password is one: libpq would read part of the password as the host, port or
    database name, and so repeat it in its messages."""
    authority, _, rest = url.partition("://")[2].partition("/")
    if authority.count("@") > 1 or ("@" not in authority and "@" in rest.split("?")[0]):
        return "an unencoded / or @ in the user name or password (write them %2F and %40)"
    try:
        conninfo.conninfo_to_dict(url)
    except psycopg.Error as exc:
        return redact(_parse_mistake(exc), url)
    return None


def _parse_mistake(exc: BaseException) -> str:
    text = str(exc)
    unknown = re.search(r'invalid URI query parameter: "([a-z_]{1,40})"', text)
    if unknown:  # a keyword libpq lacks (a misspelt one): its name, lower case letters
        return f"an unknown query parameter {unknown.group(1)}"
    for said, meant in _URL_MISTAKES:
        if said in text:
            return meant
    # Something else: libpq's words up to the first quoted part (which may be secret).
    return " ".join(text.split('"', 1)[0].split()).rstrip(":") or "libpq cannot parse it"


def _passwords(url: str) -> set[str]:
    """The password of *url* as written and decoded, as libpq reads it and as found
    without libpq (which may not parse *url*, or read an unencoded / or @ otherwise),
    for :func:`redact`."""
    userinfo = url.partition("://")[2].split("?", 1)[0].rpartition("@")[0]
    found = {userinfo.partition(":")[2]}
    try:
        found.add(conninfo.conninfo_to_dict(url).get("password") or "")
    except psycopg.Error:
        pass
    # Not one of under 4 characters: replaced wherever it occurs, it would garble the
    # message and show where it is; libpq quotes a password only when it cannot parse
    # the URL, and then :func:`url_mistake` says what is wrong in words of its own.
    return {word for password in found
            for word in (password, urllib.parse.unquote(password)) if len(word) >= 4}


def redact(text: str, url: str) -> str:
    """*text* without *url* or its password (whatever a library quoted from it)."""
    for secret in sorted({url, *_passwords(url)} - {""}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def reason(exc: BaseException, url: str) -> str:
    """Why *exc* (a psycopg error about *url*) happened, on one line, without the
    password: libpq's first line, or what is wrong in a URL it cannot parse (or would
    read otherwise than meant)."""
    mistake = url_mistake(url)
    if mistake is None and _is_parse_error(exc):
        mistake = redact(_parse_mistake(exc), url)
    if mistake is not None:
        return f"QRQ_DATABASE_URL is not a valid PostgreSQL URL: {mistake}"
    return redact(_first_line(exc), url)


def _is_parse_error(exc: BaseException) -> bool:
    return getattr(exc, "sqlstate", None) is None and (
        isinstance(exc, psycopg.ProgrammingError) or "in URI" in str(exc)
        or any(said in str(exc) for said, _ in _URL_MISTAKES))


def where(url: str) -> str:
    """``database NAME on HOST:PORT`` of *url*, without user or password."""
    if url_mistake(url) is not None:
        return "QRQ_DATABASE_URL"
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
        if _is_parse_error(err) or url_mistake(url) is not None:
            return DatabaseProblem(reason(err, url), True)
        if state is None and "for connection option" in text:
            return DatabaseProblem(f"QRQ_DATABASE_URL is not a valid PostgreSQL URL: "
                                   f"{reason(err, url)}", True)
        if state == _NO_DATABASE or "does not exist" in text and "database" in text:
            return DatabaseProblem(f"PostgreSQL: the {where(url)} does not exist; create "
                                   "it (createdb) or correct QRQ_DATABASE_URL", True)
        if state in _AUTH or "authentication failed" in text or (
                "role" in text and "does not exist" in text):
            return DatabaseProblem(f"PostgreSQL refused the login to the {where(url)}: "
                                   f"{reason(err, url)}", True)
        if state == _PRIVILEGE or "permission denied" in text:
            return DatabaseProblem(f"PostgreSQL: permission denied in the {where(url)}: "
                                   f"{reason(err, url)}; grant qrq's role the rights on "
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
                                   f"{reason(err, url)}", False)
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
