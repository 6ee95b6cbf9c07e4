"""Bulk generation commands: submit a batch, list its items, re-run its failed ones."""

from __future__ import annotations

import csv
import io
import json
import uuid
from pathlib import Path

import click

from qrq import batch
from qrq.appdb.models import User
from qrq.artifacts import open_store
from qrq.batch.submit import enqueue_batch, enqueue_retry
from qrq.cli.base import (
    JOB_ID,
    NonEmptyPath,
    cli_actor,
    echo_table,
    get_app_db,
    get_queue,
    key_values,
    main,
    shorten,
)
from qrq.cli.jobs import wait_for, wait_options
from qrq.humanize import format_bytes
from qrq.queue import audit


def _owner_id(name: str | None) -> int | None:
    if name is None:
        return None
    with get_app_db().connection_context():
        user = User.get_or_none(User.name == name)
    if user is None:
        raise click.BadParameter(f"no user {name!r}", param_hint="--user")
    return user.id


CSV_COLUMNS = ("data", "template_id", "title")


def _csv_items(path: Path, template_id: int | None) -> list[dict]:
    """Items from a CSV with a header: ``data`` (required), ``template_id``, ``title``.
    An unknown column or a row of more fields than the header is an error: a misspelt
    ``titel`` would otherwise be dropped from every card without a word."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise click.BadParameter(f"line {line}: not UTF-8 text (byte 0x{raw[exc.start]:02x}); "
                                 "save the file as UTF-8", param_hint="--csv") from None
    with io.StringIO(text, newline="") as fh:
        reader = csv.DictReader(fh)
        columns = set(reader.fieldnames or ())
        if "data" not in columns:
            raise click.BadParameter("needs a header row with a data column",
                                     param_hint="--csv")
        unknown = sorted(columns - set(CSV_COLUMNS))
        if unknown:
            raise click.BadParameter(
                f"unknown column{'s' if len(unknown) > 1 else ''} "
                f"{', '.join(map(repr, unknown))} (the columns are {', '.join(CSV_COLUMNS)})",
                param_hint="--csv")
        if "template_id" not in columns and template_id is None:
            raise click.BadParameter("give --template or a template_id column",
                                     param_hint="--csv")
        items = []
        for row in reader:
            if None in row:  # DictReader's key for the fields beyond the header's
                raise click.BadParameter(f"line {reader.line_num}: more fields than the "
                                         f"header's {len(reader.fieldnames)}",
                                         param_hint="--csv")
            item: dict = {"data": row["data"]}
            raw = row.get("template_id") or template_id
            try:
                if isinstance(raw, str) and not (raw.isascii() and raw.strip().isdigit()):
                    raise ValueError(raw)  # int() also takes "١", "1_000", "+1"
                item["template_id"] = int(raw)
            except (TypeError, ValueError):
                raise click.BadParameter(f"line {reader.line_num}: template_id {raw!r} is "
                                         "not a number", param_hint="--csv") from None
            if row.get("title"):
                item["title"] = row["title"]
            items.append(item)
    return items


def wait_for_batch(huey, job_id: str, total: int, timeout: float) -> dict:
    """Poll a batch to its end with a progress bar over its items; return its job record."""
    def items_done(job: dict) -> int:
        found = batch.counts(huey.storage, job_id)
        return found["completed"] + found["failed"]

    return wait_for(huey, job_id, "encoding", timeout, length=total, position=items_done)


def _report(huey, job_id: str, job: dict) -> None:
    found = batch.get_batch(huey.storage, job_id)
    click.echo(f"{job['status']}: {found['completed']} ok, {found['failed']} failed "
               f"of {found['total']}")
    for kind, info in (found["outputs"] or {}).items():
        click.echo(f"{kind}: {open_store(huey.settings).describe(info['file'])} "
                   f"({format_bytes(info['bytes'])})")
    if job["status"] != "finished":
        raise click.ClickException(f"batch {job['status']}: {job['error']}")


@main.group("batch")
def batch_group() -> None:
    """Bulk generation: many codes in one job, one combined PDF and a ZIP of SVGs/PNGs."""


@batch_group.command("submit")
@click.option("--template", "template_id", type=int, help="Template of every item.")
@click.option("--count", type=click.IntRange(1), help="Codes of --template, numbered 1..N.")
@click.option("--csv", "csv_path", type=NonEmptyPath(exists=True, dir_okay=False,
                                                   path_type=Path),
              help="One item per row: columns data, and template_id unless --template.")
@click.option("-o", "--option", "options", multiple=True, metavar="KEY=VALUE",
              callback=key_values,
              help="Override a template field for every item; VALUE is JSON or a bare "
                   "string, and a text field takes it as written (title=2026).")
@click.option("--user", help="Submit as this user (owner, and recipient of the mail).")
@wait_options(timeout=1800)
def batch_submit(template_id: int | None, count: int | None, csv_path: Path | None,
                 options: dict[str, object], user: str | None, wait: bool,
                 timeout: float) -> None:
    """Queue a batch: N numbered codes of a template, or one per CSV row.

    Example: qrq batch submit --template 4 --count 10000 --wait
    """
    if (count is None) == (csv_path is None) or (count is not None and template_id is None):
        raise click.UsageError("give --template ID --count N, or --csv FILE")
    if count is not None and "copies" in options:  # --count would silently replace it
        raise click.UsageError("give the number of codes as --count N, not -o copies=N")
    if csv_path is not None:
        body = {"items": _csv_items(csv_path, template_id), "options": options}
    else:
        body = {"template_ids": [template_id], "options": {**options, "copies": count}}
    huey = get_queue()
    owner_id = _owner_id(user)
    job_id = str(uuid.uuid4())
    get_app_db()
    checked = batch.parse_request(body, batch.load_templates, job_id,
                                  huey.settings.max_batch_items,
                                  margin_mm=huey.settings.print_margin_mm)
    enqueue_batch(checked, job_id, owner_id)
    click.echo(f"queued batch {job_id} ({len(checked.items)} items)")
    if wait:
        _report(huey, job_id, wait_for_batch(huey, job_id, len(checked.items), timeout))


@batch_group.command("items")
@click.argument("job_id", type=JOB_ID)
@click.option("--failed", is_flag=True, help="Only the failed items.")
@click.option("--page", type=click.IntRange(1), default=1, show_default=True)
@click.option("--per-page", type=click.IntRange(1, 10_000), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of lines.")
def batch_items(job_id: str, failed: bool, page: int, per_page: int, as_json: bool) -> None:
    """List a batch's items: index, status, then the file or the error, and the data.

    Example: qrq batch items 1b4e28ba-2fa1-11d2-883f-0016d3cca427 --failed
    """
    huey = get_queue()
    found = batch.get_batch(huey.storage, job_id)
    if found is None:
        raise click.ClickException(f"no batch {job_id}")
    rows, matching = batch.list_items(huey.storage, job_id, found["total"],
                                      "failed" if failed else None, page, per_page,
                                      batch.formats_of(found["options"]))
    if as_json:
        click.echo(json.dumps({"items": rows, "total": matching, "page": page}, indent=2))
        return
    if rows:
        echo_table(("idx", "status", "file or error", "data"),
                   [(row["idx"], row["status"], row["output"]["file"] if row["output"]
                     else shorten(row["error"], 60), shorten(row["data"], 60))
                    for row in rows], right=("idx",))
    shown = f"{(page - 1) * per_page + len(rows)}" if rows else "0"
    click.echo(f"{shown} of {matching} item(s)" + (" failed" if failed else ""))


@batch_group.command("retry-failed")
@click.argument("job_id", type=JOB_ID)
@wait_options(timeout=1800)
def batch_retry_failed(job_id: str, wait: bool, timeout: float) -> None:
    """Re-run a batch's failed items as a new batch linked to it.

    Example: qrq batch retry-failed 1b4e28ba-2fa1-11d2-883f-0016d3cca427
    """
    huey = get_queue()
    found = batch.get_batch(huey.storage, job_id)
    if found is None:
        raise click.ClickException(f"no batch {job_id}")
    new_id, count = enqueue_retry(job_id, found["owner_id"])
    audit.record(huey.storage, cli_actor(), "batch.retry_failed_items", job_ids=[job_id],
                 detail={"new_batch": new_id, "items": count})
    click.echo(f"queued batch {new_id} ({count} failed items of {job_id})")
    if wait:
        _report(huey, new_id, wait_for_batch(huey, new_id, count, timeout))
