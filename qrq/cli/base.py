"""The ``qrq`` group and what its commands share: settings, the queue, the app database.

Commands only parse arguments, call the library and print; library errors
become ``click.ClickException`` (exit 1), bad arguments ``BadParameter`` (exit 2).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

# Imported for its job end hook: a job the CLI ends (`jobs cancel`) posts its webhook.
from qrq import pg_errors, webhooks  # noqa: F401
from qrq.appdb.db import open_app_db
from qrq.config import holds_qrq_data, load_settings
from qrq.errors import QrqError
from qrq.queue import huey
from qrq.queue.jobs import resolve_id


def get_settings():
    try:
        return load_settings()
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None


def get_queue():
    """The Huey instance, opened from the settings (jobs are submitted by task name)."""
    huey.init(get_settings())
    return huey


def get_app_db():
    settings = get_settings()
    settings.ensure_dirs()
    return open_app_db(settings)


class CliGroup(click.Group):
    """Turns qrq's errors into click's: a one-line ``Error:`` and exit status 1; so are
    PostgreSQL's connection and permission errors (see :mod:`qrq.pg_errors`)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except QrqError as exc:
            where = f" ({exc.field})" if exc.field else ""
            raise click.ClickException(f"{exc.message}{where}") from None
        except Exception as exc:
            problem = pg_errors.describe(exc, os.environ.get("QRQ_DATABASE_URL", ""))
            if problem is None:
                raise
            raise click.ClickException(str(problem)) from None


# The commands that may create a data directory; every other one needs an existing one.
CREATES_DATA_DIR = ("init", "dev")


@click.group(cls=CliGroup)
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Data directory (default: $QRQ_DATA_DIR or ./data).")
@click.version_option(package_name="qrq")
@click.pass_context
def main(ctx: click.Context, data_dir: Path | None) -> None:
    """qrq: background jobs for QRCards on one SQLite file.

    Example: qrq dev
    """
    if data_dir is not None:
        data_dir = data_dir.resolve()
        # A mistyped path must not quietly become a new, empty installation.
        if ctx.invoked_subcommand not in CREATES_DATA_DIR and not holds_qrq_data(data_dir):
            raise click.BadParameter(f"{data_dir} is not a qrq data directory; run qrq init",
                                     param_hint="--data-dir")
        os.environ["QRQ_DATA_DIR"] = str(data_dir)
    get_settings()  # every command starts with settings that are allowed


# -- what many commands share: job ids, tables, JSON ----------------------------------

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
