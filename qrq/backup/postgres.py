"""qrq's PostgreSQL database in a backup set: ``pg_dump -Fc``, checked by a restore.

With ``QRQ_DATABASE_URL`` set, the queue, job records, users and templates are one
schema of a PostgreSQL database (the URL's ``current_schema()``). A run dumps that
schema with ``pg_dump --format=custom`` (already compressed) inside an exported
snapshot, counting each table's rows in the same snapshot; the check restores the
dump into a scratch database (created and dropped here: the role needs CREATEDB)
and compares the counts. A restore replaces the schema's objects in one transaction.

This is a logical copy of qrq's own data, taken when the backup runs: it does not
replace the operator's base backups and WAL archiving (point-in-time recovery).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from psycopg import conninfo, sql

from qrq import pg_errors
from qrq.backup import files
from qrq.backup.archive import Stopped, hash_file, never
from qrq.errors import QrqError

# Where Debian and Ubuntu install each PostgreSQL version's programs (as .ci/postgres).
TOOL_DIRS = "/usr/lib/postgresql/*/bin"
NAME = "postgresql"  # the entry's name in a manifest
FILE = "postgresql.dump"
CODEC = "pg_dump"  # pg_dump's custom format, compressed by pg_dump itself


class MissingTool(QrqError):
    """pg_dump or pg_restore is not installed."""

    status = 500
    code = "missing_tool"


class ToolFailed(QrqError):
    """pg_dump or pg_restore failed (its last error lines say why)."""

    status = 500
    code = "tool_failed"


def find_tool(name: str) -> str:
    """The newest installed PostgreSQL client program *name* (pg_dump, pg_restore).

    :raises MissingTool: none is installed.
    """
    dirs = sorted(glob.glob(TOOL_DIRS),
                  key=lambda d: [int(p) if p.isdigit() else p
                                 for p in Path(d).parent.name.split(".")])
    for folder in reversed(dirs):
        if os.access(Path(folder) / name, os.X_OK):
            return str(Path(folder) / name)
    found = shutil.which(name)
    if found:
        return found
    raise MissingTool(f"{name} is not installed: install PostgreSQL's client programs "
                      "(Debian: apt-get install postgresql-client)")


def _run(args: list[str], url: str, stop: Callable[[], bool] | None = None) -> None:
    """Run a client program on the database *url*; its last error lines become the
    exception. The password goes in its environment (``PGPASSWORD``), not on its command
    line, where every local user can read it (``ps``, ``/proc/PID/cmdline``)."""
    params = conninfo.conninfo_to_dict(url)
    password = params.pop("password", None)
    env = {**os.environ, **({"PGPASSWORD": password} if password is not None else {})}
    proc = subprocess.Popen([*args, f"--dbname={conninfo.make_conninfo(**params)}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, env=env)
    while True:
        try:
            _, err = proc.communicate(timeout=1.0)
            break
        except subprocess.TimeoutExpired:
            if stop is not None and stop():
                proc.kill()
                proc.wait()
                raise Stopped("stopped") from None
    if proc.returncode != 0:
        lines = err.decode(errors="replace").strip().splitlines()
        raise ToolFailed(f"{Path(args[0]).name} failed: " + " / ".join(lines[-3:]))


def _schema_and_counts(conn: psycopg.Connection) -> tuple[str, dict[str, int]]:
    schema = conn.execute("select current_schema()").fetchone()[0]
    tables = [name for name, in conn.execute(
        "select tablename from pg_tables where schemaname = %s order by tablename",
        (schema,))]
    counts = {}
    for table in tables:
        query = sql.SQL("select count(*) from {}.{}").format(sql.Identifier(schema),
                                                             sql.Identifier(table))
        counts[table] = conn.execute(query).fetchone()[0]
    return schema, counts


def dump(url: str, out: Path, stop: Callable[[], bool] | None = None) -> dict:
    """Dump qrq's schema of *url* into *out*; return ``{"schema", "tables"}``, the row
    counts as of the dump's snapshot."""
    with psycopg.connect(url) as conn:
        conn.execute("set transaction isolation level repeatable read, read only")
        snapshot = conn.execute("select pg_export_snapshot()").fetchone()[0]
        schema, counts = _schema_and_counts(conn)
        # The snapshot lives while this transaction is open: pg_dump sees exactly it.
        _run([find_tool("pg_dump"), "--format=custom", f"--snapshot={snapshot}",
              f"--schema={schema}", "--no-owner", "--no-privileges", f"--file={out}"],
             url, stop)
        conn.rollback()
    return {"schema": schema, "tables": counts}


def _url_of(url: str, dbname: str) -> str:
    params = conninfo.conninfo_to_dict(url)
    params["dbname"] = dbname
    params.pop("options", None)  # the search_path of qrq's own database
    return conninfo.make_conninfo(**params)


def _restore_list(dump_file: Path, work: Path) -> Path:
    """pg_restore's table of contents for *dump_file* without the schema itself and its
    comment (it exists in the target: ``public`` always, or made before; and only its
    owner may comment on it, which qrq's role need not be)."""
    listing = subprocess.run([find_tool("pg_restore"), "--list", str(dump_file)],
                             capture_output=True, text=True, check=True).stdout
    kept = [line for line in listing.splitlines()
            if " SCHEMA - " not in line and " COMMENT - SCHEMA " not in line]
    path = work / f".{dump_file.name}.{uuid.uuid4().hex[:8]}.list"
    path.write_text("\n".join(kept) + "\n")
    return path


def check(url: str, dump_file: Path, schema: str, expected: dict[str, int] | None,
          stop: Callable[[], bool] | None = None) -> list[str]:
    """Restore *dump_file* into a scratch database on *url*'s server and compare its
    row counts with *expected*; the problems (empty: good)."""
    scratch = f"qrq_verify_{uuid.uuid4().hex[:12]}"
    admin = psycopg.connect(url, autocommit=True)
    listing = None
    try:
        try:
            admin.execute(sql.SQL("create database {}").format(sql.Identifier(scratch)))
        except psycopg.Error as exc:
            return [f"cannot create a scratch database to check the dump in "
                    f"({pg_errors.redact(str(exc), url)}); "
                    "the role needs CREATEDB"]
        try:
            target = _url_of(url, scratch)
            with psycopg.connect(target, autocommit=True) as conn:
                conn.execute(sql.SQL("create schema if not exists {}").format(
                    sql.Identifier(schema)))
            listing = _restore_list(dump_file, dump_file.parent)
            _run([find_tool("pg_restore"), "--exit-on-error", "--no-owner",
                  "--no-privileges", f"--use-list={listing}", str(dump_file)], target, stop)
            with psycopg.connect(target, options=f"-csearch_path={schema}") as conn:
                _, counts = _schema_and_counts(conn)
        except Exception as exc:  # a damaged dump, a failed restore
            if stop is not None and stop():
                raise
            return [f"{dump_file.name} does not restore: {pg_errors.redact(str(exc), url)}"]
        finally:
            admin.execute(sql.SQL("drop database if exists {} with (force)").format(
                sql.Identifier(scratch)))
    finally:
        admin.close()
        if listing is not None:
            listing.unlink(missing_ok=True)
    if expected is not None and counts != expected:
        return [f"row counts differ: expected {expected}, got {counts}"]
    return []


def restore(url: str, dump_file: Path, schema: str) -> None:
    """Replace qrq's objects in *url*'s schema with the dump's, in one transaction.

    :raises QrqError: the dump was made from another schema than *url* uses.
    """
    with psycopg.connect(url) as conn:
        current = conn.execute("select current_schema()").fetchone()[0]
    if current != schema:
        raise QrqError(f"the dump holds schema {schema!r}, the database URL uses "
                       f"{current!r}: set its search_path to {schema!r}")
    listing = _restore_list(dump_file, dump_file.parent)
    try:
        _run([find_tool("pg_restore"), "--clean", "--if-exists", "--single-transaction",
              "--exit-on-error", "--no-owner", "--no-privileges", f"--use-list={listing}",
              str(dump_file)], url)
    finally:
        listing.unlink(missing_ok=True)


def size(url: str) -> int:
    """Bytes qrq's schema of *url* takes on the server (tables with their indexes)."""
    with psycopg.connect(url) as conn:
        return int(conn.execute(
            "select coalesce(sum(pg_total_relation_size(c.oid)), 0) from pg_class c "
            "join pg_namespace n on n.oid = c.relnamespace "
            "where n.nspname = current_schema() and c.relkind = 'r'").fetchone()[0])


def backup_entry(url: str, set_dir: Path, stop: Callable[[], bool] = never) -> dict[str, Any]:
    """Dump and check qrq's PostgreSQL schema into *set_dir*; the manifest entry. Never
    raises for a failed dump or check: the entry says ``failed`` and keeps no file."""
    started = time.monotonic()
    entry: dict[str, Any] = {"name": NAME, "file": FILE, "codec": CODEC,
                             "status": "failed", "error": None}
    out = set_dir / FILE
    try:
        with files.create(out):  # private (0600) before pg_dump writes into it
            pass
        found = dump(url, out, stop)
        entry.update(source=f"PostgreSQL schema {found['schema']}", schema=found["schema"],
                     tables=found["tables"])
        entry["size"] = entry["compressed_size"] = out.stat().st_size
        entry["sha256"] = entry["db_sha256"] = hash_file(out, stop)
        problems = check(url, out, found["schema"], found["tables"], stop)
        if problems:
            raise RuntimeError("verification failed: " + "; ".join(problems))
        entry["status"] = "ok"
    except Stopped:
        raise
    except Exception as exc:
        entry["error"] = str(exc) if isinstance(exc, QrqError) else f"{type(exc).__name__}: {exc}"
        out.unlink(missing_ok=True)
    finally:
        entry["duration"] = round(time.monotonic() - started, 3)
    return entry


def verify_entry(set_dir: Path, entry: dict, url: str,
                 stop: Callable[[], bool] = never) -> list[str]:
    """Check a set's dump again: its sha256, then a restore into a scratch database on
    *url*'s server with the manifest's row counts; the problems (empty: good)."""
    packed = set_dir / entry["file"]
    if not packed.is_file():
        return [f"{entry['file']} is missing"]
    if hash_file(packed, stop) != entry["sha256"]:
        return [f"{entry['file']}: its sha256 does not match the manifest"]
    if not url:
        return [f"{entry['file']}: checking a PostgreSQL dump needs a server to restore "
                "it on: set QRQ_DATABASE_URL"]
    return [f"{entry['file']}: {problem}"
            for problem in check(url, packed, entry["schema"], entry["tables"], stop)]
