"""The ``qrq`` group and what its commands share: settings, the queue, the app database.

Commands only parse arguments, call the library and print; library errors
become ``click.ClickException`` (exit 1), bad arguments ``BadParameter`` (exit 2).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import getpass
import json
import logging
import os
import sqlite3
from pathlib import Path

import click
import peewee

# Imported for its job end hook: a job the CLI ends (`jobs cancel`) posts its webhook.
from qrq import pg_errors, webhooks  # noqa: F401
from qrq.appdb.db import open_app_db
from qrq.cards.options import json_schema
from qrq.config import holds_qrq_data, load_settings
from qrq.config.files import file_in_the_way
from qrq.config.load import read_settings
from qrq.errors import QrqError
from qrq.queue import catalog, huey, jobs, stats
from qrq.queue.jobs import resolve_id


def get_settings(read=load_settings, **overrides):
    try:
        return read(**overrides)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None


def get_queue(key_check: bool = True):
    """The Huey instance, opened from the settings (jobs are submitted by task name);
    with whatever key is in effect unless *key_check* (commands that replace or
    compare keys: a restore, a move, ``qrq key``)."""
    huey.init(get_settings(), key_check=key_check)
    return huey


def live_consumers(settings, storage) -> list[str]:
    """The consumers of *storage* whose heartbeat is fresh, one phrase each."""
    return [f"{c['host']} pid {c['pid']} ({c['heartbeat_age']:.0f}s ago)"
            for c in stats.consumers(storage)
            if c["heartbeat_age"] < 2 * settings.lease_seconds]


def cli_actor() -> str:
    """Who the audit log says acted from the command line: ``cli:<os user>``."""
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):  # no login name and no passwd entry (some containers)
        return f"cli:uid {os.getuid()}"


def get_app_db(new: bool = False):
    """The app database, bound; unless *new* (``qrq init``), a lost app.db is refused
    (:class:`qrq.appdb.db.AppDatabaseLost`)."""
    settings = get_settings()
    settings.ensure_dirs()
    return open_app_db(settings, ran_before=None if new else
                       lambda: jobs.any_jobs(get_queue().storage))


class NonEmptyPath(click.Path):
    """click's ``Path`` that refuses an empty value, which would mean the current
    directory: ``--to "$QRQ_DATA_DIR"`` with the variable unset restored into it."""

    def convert(self, value, param, ctx):
        if isinstance(value, str) and not value.strip():
            self.fail("is empty; give a path (. for the current directory)", param, ctx)
        return super().convert(value, param, ctx)


class CliGroup(click.Group):
    """Turns qrq's errors into click's: a one-line ``Error:`` and exit status 1; so are
    PostgreSQL's connection and permission errors (see :mod:`qrq.pg_errors`) and a
    SQLite file that cannot be read (not a database, corrupt, tables missing)."""

    def resolve_command(self, ctx, args):
        name, command, rest = super().resolve_command(ctx, args)
        # What runs, for qrq's callback, which runs before the subcommand parses: its
        # words, and whether it only shows a usage (--help, or a group alone).
        ctx.meta.setdefault("qrq.command", (name, *rest))
        ctx.meta.setdefault("qrq.usage", "--help" in rest
                            or (isinstance(command, click.Group) and not rest))
        return name, command, rest

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except QrqError as exc:
            where = f" ({exc.field})" if exc.field else ""
            raise click.ClickException(f"{exc.message}{where}") from None
        except OSError as exc:
            if exc.errno == errno.EPIPE:
                raise  # output piped into a reader that left (| head): click's to quiet
            raise click.ClickException(describe_os_error(exc)) from None
        except Exception as exc:
            url = os.environ.get("QRQ_DATABASE_URL", "")
            problem = pg_errors.describe(exc, url)
            if problem is not None:
                raise click.ClickException(str(problem)) from None
            if not url and isinstance(exc, sqlite3.DatabaseError | peewee.DatabaseError):
                raise click.ClickException(
                    f"a database in {os.environ.get('QRQ_DATA_DIR') or 'the data directory'} "
                    f"cannot be read: {' '.join(str(exc).split())}") from None
            raise


def describe_os_error(exc: OSError) -> str:
    """*exc* in one line: the path and the system's reason (a file where a directory
    belongs is said so: mkdir's "File exists" does not)."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    if exc.filename is None:
        return f"{reason} ({type(exc).__name__})"
    path = Path(os.fsdecode(exc.filename))
    if isinstance(exc, FileExistsError | NotADirectoryError):
        with contextlib.suppress(OSError):  # (what cannot be looked at keeps its reason)
            reason = file_in_the_way(path) or reason
    elif exc.filename2 is not None:
        return f"{path} -> {os.fsdecode(exc.filename2)}: {reason}"
    return f"{path}: {reason}"


# On SQLite, the commands that run without a data directory holding qrq data: those
# that make one, and those that read or restore backup sets, which live apart from it
# (a new machine restores into an empty directory).
NO_DATA_NEEDED = {("init",), ("dev",), ("backup", "list"), ("backup", "verify"),
                  ("backup", "restore")}
# Of those, the ones that make no file before they know they need one, not even the
# secret (a new machine's first commands must not leave a data directory behind).
MAKE_NO_FILE_FIRST = {("backup", "list"), ("backup", "verify"), ("backup", "restore")}


@click.group(cls=CliGroup)
@click.option("--data-dir", type=NonEmptyPath(file_okay=False, path_type=Path),
              help="Data directory (default: $QRQ_DATA_DIR or ./data).")
@click.version_option(package_name="qrq")
@click.pass_context
def main(ctx: click.Context, data_dir: Path | None) -> None:
    """qrq: background jobs for QRCards on one SQLite file.

    Example: qrq dev
    """
    if data_dir is not None:
        os.environ["QRQ_DATA_DIR"] = str(data_dir.resolve())
    # A line per failed reconnect while PostgreSQL is down: a command says it once.
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
    # Every command starts with settings that are allowed, checked before any file is
    # made. On SQLite, a mistyped path (or QRQ_DATA_DIR), or a command run outside the
    # checkout, must not quietly become a new, empty installation. (On PostgreSQL the
    # data directory holds only logs: any qrq process makes it.)
    settings = get_settings(read=read_settings)
    if ctx.meta.get("qrq.usage"):
        return
    command = ctx.meta.get("qrq.command", ())
    if (not settings.database_url and not holds_qrq_data(settings.data_dir)
            and command[:1] not in NO_DATA_NEEDED and command[:2] not in NO_DATA_NEEDED):
        given = ("--data-dir" if data_dir is not None else
                 "QRQ_DATA_DIR" if os.environ.get("QRQ_DATA_DIR") else "the default")
        raise click.ClickException(f"{settings.data_dir} ({given}) is not a qrq data "
                                   "directory; run qrq init, or point --data-dir or "
                                   "QRQ_DATA_DIR at one")
    if command[:2] not in MAKE_NO_FILE_FIRST:
        get_settings()


# -- what many commands share: job ids, job types, tables, JSON ----------------------

def job_type_names_param(ctx, param, value: str | None) -> str | None:
    """A comma-separated list of job types, not checked here: a consumer checks them
    once its task modules (QRQ_TASK_MODULES, with their own types) are loaded."""
    if value is None:
        return None
    names = [name.strip() for name in value.split(",") if name.strip()]
    if not names:
        raise click.BadParameter("give one or more job types, separated by commas")
    return ",".join(names)


def job_type_param(ctx, param, value: str | None) -> str | None:
    """One known job type (None: not given)."""
    problem = None if value is None else catalog.unknown_job_types([value])
    if problem:
        raise click.BadParameter(problem)
    return value


def key_values(ctx, param, values: tuple[str, ...]) -> dict[str, object]:
    """``-o KEY=VALUE`` (a template option) given any number of times, as a dict; VALUE
    is JSON or a bare string, and a text option's VALUE is its text as written unless
    quoted (``title=2026``, ``data=12345``: JSON would make them numbers, which a text
    option refuses). A key given twice is refused, as the API refuses one given twice
    in a JSON object: keeping the last silently dropped the other."""
    parsed: dict[str, object] = {}
    for value in values:
        key, sep, raw = value.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{value!r} is not KEY=VALUE")
        if key in parsed:
            raise click.BadParameter(f"{key!r} is given more than once; give each key once")
        try:
            parsed[key] = json.loads(raw)
        except json.JSONDecodeError:
            parsed[key] = raw  # a bare word is a string
        if not isinstance(parsed[key], str) and key in _text_options():
            parsed[key] = raw
    return parsed


@functools.cache
def _text_options() -> frozenset[str]:
    return frozenset(name for name, schema in json_schema()["properties"].items()
                     if schema.get("type") == "string")


class JobIdParam(click.ParamType):
    """A job id, or the start of one (the dashboard's short ids: ``5bc296e7``)."""

    name = "job_id"

    def convert(self, value, param, ctx):
        # NotFound and Conflict (ambiguous) become "Error: ..." in CliGroup.invoke.
        return resolve_id(get_queue().storage, value)


JOB_ID = JobIdParam()


def json_option(function):
    """``--json``: print the command's data as JSON instead of text (``as_json``)."""
    return click.option("--json", "as_json", is_flag=True,
                        help="Print JSON instead of text.")(function)


def echo_json(data) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def shorten(value, width: int = 60) -> str:
    """*value* on one line, cut to *width* characters with an ellipsis."""
    text = " ".join(str("" if value is None else value).split())
    return text if len(text) <= width else text[:width - 1] + "…"


def echo_table(headers: tuple[str, ...], rows: list[tuple], right: tuple[str, ...] = ()
               ) -> None:
    """Columns as wide as their widest cell, under a header row; the *right* columns
    (numbers) are right-aligned, the last one is never padded."""
    cells = [tuple("-" if v is None else str(v) for v in row) for row in rows]
    widths = [max(len(text) for text in column) for column in zip(headers, *cells,
                                                                   strict=True)]
    for row in (headers, *cells):
        line = [text.rjust(width) if name in right else text.ljust(width)
                for name, text, width in zip(headers, row, widths, strict=True)]
        click.echo("  ".join(line).rstrip())


def echo_fields(record: dict) -> None:
    """One ``name: value`` line per field; lists and objects as compact JSON."""
    for key, value in record.items():
        if isinstance(value, dict | list):
            value = json.dumps(value)
        click.echo(f"{key + ':':<17} {'-' if value is None or value == '' else value}")
