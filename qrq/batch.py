"""Bulk QR generation (pure core): check a request, store its items, render them.

A batch is one job of type ``batch`` plus one row per item in the queue
database (``batch_item``, keyed by ``(job_id, idx)``; see :mod:`qrq.schema`).
Each item's payload is computed when the batch is submitted, so a run only
encodes and draws. A run has two phases:

1. *Encode*: the pending items, in index order, each to ``ok`` (its QR matrix,
   packed, is stored) or ``failed`` (its error). Results are written in chunks
   (every :data:`CHUNK` items or :data:`CHUNK_SECONDS`), in one transaction with
   the batch's counts and the job's progress. A run that dies loses at most one
   unwritten chunk; the next run starts at the first pending item.
2. *Assemble*: the combined PDF and the ZIP of SVGs are rebuilt from the stored
   items, streamed (a page, a file at a time), into temporary files renamed
   into ``<artifacts>/<job_id>.pdf`` and ``.zip``. Rebuilding instead of
   appending means a re-run can never duplicate an output.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import re
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from qrq import jobs
from qrq import options as opts
from qrq.batch_render import (
    CardSheets,
    PdfStream,
    fast_qr_rows,
    matrix_svg,
    pack_rows,
    replace_atomically,
    unpack_matrix,
)
from qrq.errors import NotFound, PayloadTooLarge, QrqError, ValidationError

ITEM_KEYS = {"template_id", "data", "title", "lines"}
ITEM_STATUSES = ("pending", "ok", "failed")
CHUNK = 100  # items per result write
CHUNK_SECONDS = 0.5
PAGE_ROWS = 500  # rows read at a time: memory stays flat in the number of items
ENCODE_SHARE = 90  # percent of the progress bar the encode phase takes


@dataclasses.dataclass(frozen=True)
class BatchRequest:
    """A checked request: shared options and one ``(template_id, payload, title, lines)``
    per item (title and lines None: the template's)."""

    options: dict[str, Any]
    items: list[tuple[int, str, str | None, str | None]]
    template_ids: list[int]


# -- checking a request ------------------------------------------------------------------

def _positive_int(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**63:
        raise ValidationError("must be a positive integer", field=field)
    return value


def check_item_data(value: Any, field: str) -> str:
    """A literal payload: 1 to 4296 characters; tabs and newlines (vCards) allowed."""
    if not isinstance(value, str):
        raise ValidationError("must be a string", field=field)
    if not value:
        raise ValidationError("must not be empty", field=field)
    if len(value) > opts.MAX_DATA:
        raise ValidationError(f"must be at most {opts.MAX_DATA} characters", field=field)
    if any(ord(ch) < 32 and ch not in "\t\n\r" for ch in value):
        raise ValidationError("must not contain control characters", field=field)
    return value


def _pattern_payloads(template: dict, options: dict, job_id: str, copies: int,
                      field: str) -> Callable[[int], str]:
    """A function from copy number to payload; the largest copy is checked to fit."""
    pattern = options.get("data", template["payload"])
    field = "options.data" if "data" in options else field
    values = {"template_id": template["id"], "domain": template["domain"], "job_id": job_id}
    ec = options.get("error_correction", template["error_correction"])
    try:
        opts.check_fits(pattern, ec, field, copy=copies, **values)
    except (KeyError, IndexError, ValueError) as exc:
        if isinstance(exc, ValidationError):
            raise
        raise ValidationError(f"bad placeholder: {exc}", field=field) from None
    return lambda copy: pattern.format(copy=copy, **values)


def parse_request(body: Any, templates: Callable[[list[int]], dict[int, dict]],
                  job_id: str, max_items: int) -> BatchRequest:
    """Check a batch request and compute every item's payload.

    *templates* maps a list of ids to ``{id: template.to_dict()}`` for those
    that exist. :raises PayloadTooLarge: more than *max_items* items.
    :raises ValidationError: a malformed request or item (the field names its index).
    """
    if not isinstance(body, dict):
        raise ValidationError("the body must be a JSON object")
    modes = [key for key in ("template_ids", "items") if key in body]
    if len(modes) != 1:
        raise ValidationError('give either "template_ids" or "items"',
                              field=modes[1] if modes else "items")
    for key in sorted(set(body) - {"template_ids", "items", "options"}):
        raise ValidationError("unknown field; expected template_ids or items, and options",
                              field=key)
    raw = body.get("options") or {}
    if not isinstance(raw, dict):
        raise ValidationError("must be an object", field="options")
    if "items" in body and "copies" in raw:
        raise ValidationError("copies applies to template_ids; repeat items instead",
                              field="options.copies")
    copies = raw.get("copies", 1)
    if isinstance(copies, bool) or not isinstance(copies, int) or copies < 1:
        raise ValidationError("must be a positive integer", field="options.copies")
    options = opts.check_options({k: v for k, v in raw.items() if k != "copies"}, 1)
    options.pop("copies")
    listed = body[modes[0]]
    if not isinstance(listed, list) or not listed:
        raise ValidationError("must be a non-empty list", field=modes[0])
    total = len(listed) * (copies if modes[0] == "template_ids" else 1)
    if total > max_items:
        raise PayloadTooLarge(f"{total} items; at most {max_items} per batch",
                              field=modes[0])

    if modes[0] == "template_ids":
        ids = [_positive_int(v, f"template_ids[{i}]") for i, v in enumerate(listed)]
        entries = [(i, {"template_id": t}) for i, t in enumerate(ids)]
    else:
        entries = []
        for i, item in enumerate(listed):
            field = f"items[{i}]"
            if not isinstance(item, dict):
                raise ValidationError("must be an object", field=field)
            for key in sorted(set(item) - ITEM_KEYS):
                raise ValidationError("unknown field; expected " + ", ".join(sorted(ITEM_KEYS)),
                                      field=f"{field}.{key}")
            if "template_id" not in item:
                raise ValidationError("is required", field=f"{field}.template_id")
            _positive_int(item["template_id"], f"{field}.template_id")
            entries.append((i, item))

    found = templates(sorted({item["template_id"] for _, item in entries}))
    patterns: dict[int, Callable[[int], str]] = {}
    items: list[tuple[int, str, str | None, str | None]] = []
    for i, item in entries:
        field = f"{modes[0]}[{i}]" + (".template_id" if modes[0] == "items" else "")
        template = found.get(item["template_id"])
        if template is None:
            raise ValidationError(f"template {item['template_id']} does not exist",
                                  field=field)
        if template["id"] not in patterns:
            opts.build_spec(template, options)  # the layout fits this template's cards
            count = copies if modes[0] == "template_ids" else len(listed)
            patterns[template["id"]] = _pattern_payloads(template, options, job_id, count,
                                                         "data")
        if modes[0] == "template_ids":
            pattern = patterns[template["id"]]
            items.extend((template["id"], pattern(c), None, None) for c in range(1, copies + 1))
            continue
        field = f"items[{i}]"
        data = (check_item_data(item["data"], f"{field}.data") if "data" in item
                else patterns[template["id"]](i + 1))
        title = (opts.FIELDS["title"].check(item["title"], f"{field}.title")
                 if "title" in item else None)
        lines = (json.dumps(list(opts.check_lines(item["lines"], f"{field}.lines")))
                 if "lines" in item else None)
        items.append((template["id"], data, title, lines))
    return BatchRequest(options, items, sorted(found))


# -- storing and reading items ----------------------------------------------------------

def create_batch(storage, job_id: str, owner_id: int | None, request: BatchRequest,
                 parent_id: str | None = None) -> None:
    """Store a batch and its items, in one transaction."""
    with storage.db(commit=True) as curs:
        curs.execute("insert into batch (job_id, parent_id, owner_id, total, options, "
                     "created_at) values (?, ?, ?, ?, ?, ?)",
                     (job_id, parent_id, owner_id, len(request.items),
                      json.dumps(request.options), time.time()))
        curs.executemany("insert into batch_item (job_id, idx, template_id, data, title, "
                         "lines) values (?, ?, ?, ?, ?, ?)",
                         ((job_id, i, *item) for i, item in enumerate(request.items)))


def create_retry(storage, parent_id: str, job_id: str, owner_id: int | None) -> int:
    """A new batch of the failed items of *parent_id*; returns how many (0: none made)."""
    with storage.db(commit=True) as curs:
        curs.execute("select options from batch where job_id = ?", (parent_id,))
        row = curs.fetchone()
        if row is None:
            raise NotFound(f"batch {parent_id} not found")
        curs.execute("insert into batch_item (job_id, idx, template_id, data, title, lines, "
                     "source_idx) select ?, row_number() over (order by idx) - 1, "
                     "template_id, data, title, lines, idx from batch_item "
                     "where job_id = ? and status = 'failed'", (job_id, parent_id))
        count = curs.rowcount
        if count:
            curs.execute("insert into batch (job_id, parent_id, owner_id, total, options, "
                         "created_at) values (?, ?, ?, ?, ?, ?)",
                         (job_id, parent_id, owner_id, count, row[0], time.time()))
    return count


def delete_batch(storage, job_id: str) -> None:
    """Remove a batch that was never queued (its enqueue failed)."""
    with storage.db(commit=True) as curs:
        curs.execute("delete from batch_item where job_id = ?", (job_id,))
        curs.execute("delete from batch where job_id = ?", (job_id,))


def purge_orphans(storage, older_than: float = 3600, now: float | None = None) -> int:
    """Delete batches whose job does not exist (a crash between storing and queueing)."""
    cutoff = (now or time.time()) - older_than
    with storage.db(commit=True) as curs:
        curs.execute("select job_id from batch where created_at < ? and job_id not in "
                     "(select id from job)", (cutoff,))
        ids = [job_id for job_id, in curs.fetchall()]
        for job_id in ids:
            curs.execute("delete from batch_item where job_id = ?", (job_id,))
            curs.execute("delete from batch where job_id = ?", (job_id,))
    return len(ids)


_BATCH_COLUMNS = ("job_id", "parent_id", "owner_id", "total", "completed", "failed",
                  "options", "mail_job_id", "outputs")


def get_batch(storage, job_id: str) -> dict[str, Any] | None:
    rows = storage.sql(f"select {', '.join(_BATCH_COLUMNS)} from batch where job_id = ?",
                       (job_id,), results=True)
    if not rows:
        return None
    batch = dict(zip(_BATCH_COLUMNS, rows[0], strict=True))
    batch["options"] = json.loads(batch["options"])
    batch["outputs"] = json.loads(batch["outputs"]) if batch["outputs"] else None
    return batch


def counts(storage, job_id: str) -> dict[str, int]:
    """``completed`` (items ok), ``failed`` and ``total`` of a batch; {} if none."""
    rows = storage.sql("select completed, failed, total from batch where job_id = ?",
                       (job_id,), results=True)
    return dict(zip(("completed", "failed", "total"), rows[0], strict=True)) if rows else {}


def item_filename(idx: int, payload: str, total: int, suffix: str = ".svg") -> str:
    """``00042-menu.qrcards.example-t-1-table-43.svg``: the item's index, then its payload."""
    slug = re.sub(r"^[a-z]+://", "", payload.strip(), flags=re.I)
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", slug).strip("-._")[:60] or "code"
    return f"{idx:0{max(5, len(str(total - 1)))}d}-{slug}{suffix}"


def list_items(storage, job_id: str, total: int, status: str | None = None,
               page: int = 1, per_page: int = 100) -> tuple[list[dict[str, Any]], int]:
    """One page of a batch's items in index order, and how many match *status*."""
    where, params = "job_id = ?", [job_id]
    if status is not None:
        where += " and status = ?"
        params.append(status)
    matching = storage.sql(f"select count(*) from batch_item where {where}", params,
                           results=True)[0][0]
    rows = storage.sql(f"select idx, template_id, data, title, status, error, source_idx "
                       f"from batch_item where {where} order by idx limit ? offset ?",
                       (*params, per_page, (page - 1) * per_page), results=True)
    items = []
    for idx, template_id, data, title, state, error, source_idx in rows:
        item = {"idx": idx, "template_id": template_id, "data": data, "status": state,
                "output": None, "error": error}
        if title is not None:
            item["title"] = title
        if source_idx is not None:
            item["source_idx"] = source_idx
        if state == "ok":
            item["output"] = {"file": item_filename(idx, data, total)}
        items.append(item)
    return items, matching


def item_matrix(storage, job_id: str, idx: int) -> tuple[list[list[bool]], str] | None:
    """An ok item's matrix and payload."""
    rows = storage.sql("select matrix, data from batch_item where job_id = ? and idx = ? "
                       "and status = 'ok'", (job_id, idx), results=True)
    return (unpack_matrix(rows[0][0]), rows[0][1]) if rows else None


def _pages(storage, sql: str, params: tuple) -> Iterator[tuple]:
    """Rows of ``sql`` (which selects ``idx`` first and has ``idx > ?`` as its last
    parameter), :data:`PAGE_ROWS` at a time, in index order."""
    last = -1
    while True:
        rows = storage.sql(f"{sql} order by idx limit {PAGE_ROWS}", (*params, last),
                           results=True)
        yield from rows
        if len(rows) < PAGE_ROWS:
            return
        last = rows[-1][0]


def load_templates(ids: list[int]) -> dict[int, dict]:
    """``{id: template.to_dict()}`` of those of *ids* that exist (app_db must be bound)."""
    from qrq.db import app_db
    from qrq.models import Template

    found: dict[int, dict] = {}
    with app_db.connection_context():
        for i in range(0, len(ids), 500):
            for template in Template.select().where(Template.id.in_(ids[i:i + 500])):
                found[template.id] = template.to_dict()
    return found


# -- running a batch -----------------------------------------------------------------------

class _Specs:
    """Each template's card spec under the batch's options, and per-item text overrides."""

    def __init__(self, templates: dict[int, dict], options: dict[str, Any]):
        self.templates, self.options = templates, options
        self.cache: dict[int, Any] = {}

    def get(self, template_id: int, title: str | None = None, lines: str | None = None):
        """The spec, or None when the template no longer exists."""
        if template_id not in self.cache:
            template = self.templates.get(template_id)
            self.cache[template_id] = (None if template is None
                                       else opts.build_spec(template, self.options))
        spec = self.cache[template_id]
        if spec is not None and (title is not None or lines is not None):
            spec = dataclasses.replace(
                spec, title=spec.title if title is None else title,
                lines=spec.lines if lines is None else tuple(json.loads(lines)))
        return spec


def _write_chunk(storage, job_id: str, rows: list[tuple], total: int) -> tuple[int, int]:
    """Item results, the batch's counts and the job's progress, in one transaction."""
    with storage.db(commit=True) as curs:
        curs.executemany("update batch_item set status = ?, matrix = ?, error = ? "
                         "where job_id = ? and idx = ? and status = 'pending'", rows)
        curs.execute("update batch set "
                     "completed = (select count(*) from batch_item where job_id = ?1 "
                     "and status = 'ok'), "
                     "failed = (select count(*) from batch_item where job_id = ?1 "
                     "and status = 'failed') where job_id = ?1 returning completed, failed",
                     (job_id,))
        ok, failed = curs.fetchone()
        curs.execute("update job set progress = ?, stage = ? where id = ? and "
                     "status = 'running'", (ENCODE_SHARE * (ok + failed) // max(1, total),
                                            f"encoding {ok + failed}/{total} "
                                            f"({failed} failed)", job_id))
    return ok, failed


def _canceled(storage, job_id: str) -> bool:
    rows = storage.sql("select cancel_requested from job where id = ?", (job_id,),
                       results=True)
    return bool(rows and rows[0][0])


def encode_pending(storage, job_id: str, total: int, specs: _Specs,
                   check: Callable[[], None]) -> tuple[int, bool]:
    """Encode the pending items in index order; return ``(encoded, canceled)``.

    *check* is called before each item (it raises on a timeout); a cancel
    request stops the loop at the next item, after writing what is done.
    """
    rows: list[tuple] = []
    encoded, canceled = 0, False
    flushed_at = time.monotonic()
    sql = ("select idx, template_id, data, title, lines from batch_item "
           "where job_id = ? and status = 'pending' and idx > ?")
    for idx, template_id, data, title, lines in _pages(storage, sql, (job_id,)):
        check()
        if _canceled(storage, job_id):
            canceled = True
            break
        try:
            spec = specs.get(template_id, title, lines)
            if spec is None:
                raise NotFound(f"template {template_id} no longer exists")
            rows.append(("ok", pack_rows(*fast_qr_rows(data, spec.error_correction)),
                         None, job_id, idx))
        except Exception as exc:  # one bad item never fails the batch
            message = str(exc) if isinstance(exc, ValueError | QrqError) else (
                f"{type(exc).__name__}: {exc}")
            rows.append(("failed", None, message, job_id, idx))
        encoded += 1
        if len(rows) >= CHUNK or time.monotonic() - flushed_at >= CHUNK_SECONDS:
            _write_chunk(storage, job_id, rows, total)
            rows, flushed_at = [], time.monotonic()
    _write_chunk(storage, job_id, rows, total)
    return encoded, canceled


def _report(storage, job_id: str, percent: int, stage: str) -> None:
    storage.sql("update job set progress = ?, stage = ? where id = ? and status = 'running'",
                (percent, stage, job_id), commit=True)


def assemble(storage, artifacts: Path, job_id: str, total: int, specs: _Specs,
             title: str = "QR cards") -> dict[str, Any]:
    """Rebuild ``<job_id>.pdf`` and ``<job_id>.zip`` from the stored items, streamed."""
    artifacts.mkdir(parents=True, exist_ok=True)
    for stale in artifacts.glob(f".{job_id}.*"):  # left by a run that died here
        stale.unlink(missing_ok=True)
    tmp = {s: artifacts / f".{job_id}.{s}.tmp" for s in ("pdf", "zip", "csv")}
    sql = ("select idx, template_id, data, title, lines, status, matrix, error, source_idx "
           "from batch_item where job_id = ? and status != 'pending' and idx > ?")
    svgs, reported = 0, time.monotonic()
    try:
        with open(tmp["pdf"], "wb") as pdf_out, \
                zipfile.ZipFile(tmp["zip"], "w", zipfile.ZIP_DEFLATED) as archive, \
                open(tmp["csv"], "w", newline="", encoding="utf-8") as manifest_out:
            sheets = CardSheets(PdfStream(pdf_out, title))
            manifest = csv.writer(manifest_out)
            manifest.writerow(["idx", "source_idx", "template_id", "status", "file", "data",
                               "error"])
            for idx, template_id, data, item_title, lines, status, packed, error, source \
                    in _pages(storage, sql, (job_id,)):
                name = ""
                if status == "ok":
                    matrix = unpack_matrix(packed)
                    spec = specs.get(template_id, item_title, lines)
                    if spec is not None:
                        sheets.add(spec, data, matrix)
                    colours = (spec.quiet_zone, spec.fg_color, spec.bg_color,
                               spec.qr_size_mm) if spec else ()
                    name = item_filename(idx, data, total)
                    archive.writestr(name, matrix_svg(matrix, *colours, title=data))
                    svgs += 1
                manifest.writerow([idx, "" if source is None else source, template_id,
                                   status, name, data, error or ""])
                if time.monotonic() - reported >= CHUNK_SECONDS:
                    reported = time.monotonic()
                    _report(storage, job_id, ENCODE_SHARE + (99 - ENCODE_SHARE) * idx // total,
                            f"writing PDF and ZIP {idx + 1}/{total}")
            pages = sheets.close()
            manifest_out.flush()
            archive.write(tmp["csv"], "manifest.csv")
        outputs = {"pdf": {"file": f"{job_id}.pdf", "pages": pages, "cards": sheets.cards},
                   "zip": {"file": f"{job_id}.zip", "files": svgs}}
        for suffix in ("pdf", "zip"):
            final = artifacts / f"{job_id}.{suffix}"
            replace_atomically(tmp[suffix], final)
            outputs[suffix]["bytes"] = final.stat().st_size
    finally:
        for path in tmp.values():
            path.unlink(missing_ok=True)
    storage.sql("update batch set outputs = ? where job_id = ?",
                (json.dumps(outputs), job_id), commit=True)
    return outputs


def run_batch(storage, artifacts: Path, job_id: str, check: Callable[[], None],
              templates: Callable[[list[int]], dict[int, dict]] = load_templates
              ) -> dict[str, Any]:
    """Run (or resume) a batch: encode its pending items, then write its outputs.

    :raises NotFound: the batch's items are gone. :raises jobs.JobCanceled: a
        cancel arrived; the items done so far are kept and their outputs written.
    """
    batch = get_batch(storage, job_id)
    if batch is None:
        raise NotFound(f"batch {job_id} has no items")
    total = batch["total"]
    ids = [t for t, in storage.sql("select distinct template_id from batch_item "
                                   "where job_id = ?", (job_id,), results=True)]
    specs = _Specs(templates(ids), batch["options"])
    done_before = batch["completed"] + batch["failed"]
    if done_before:
        _report(storage, job_id, ENCODE_SHARE * done_before // max(1, total),
                f"resuming after {done_before}/{total} items")
    encoded, canceled = encode_pending(storage, job_id, total, specs, check)
    _report(storage, job_id, ENCODE_SHARE, "writing PDF and ZIP")
    outputs = assemble(storage, artifacts, job_id, total, specs)
    if canceled:
        raise jobs.JobCanceled("canceled while running; the items done so far are kept")
    done = counts(storage, job_id)
    return {**done, "success_rate": round(done["completed"] / max(1, total), 4),
            "resumed_after": done_before, "encoded_this_run": encoded,
            "parent_job_id": batch["parent_id"], "artifact": outputs["pdf"]["file"],
            "content_type": "application/pdf", **outputs}


def completion_mail(job_id: str, result: dict[str, Any], base_url: str) -> tuple[str, str]:
    """Subject and body of the mail sent when a batch finishes."""
    api = f"{base_url.rstrip('/')}/api/batch/{job_id}"
    rate = f"{100 * result['success_rate']:.1f}%"
    subject = (f"qrq batch finished: {result['completed']}/{result['total']} codes "
               f"({rate})")
    lines = [
        f"Your batch {job_id} has finished.", "",
        f"Items:        {result['total']}",
        f"Succeeded:    {result['completed']}",
        f"Failed:       {result['failed']}",
        f"Success rate: {rate}", "",
        f"Combined PDF ({result['pdf']['pages']} pages): {api}/download/pdf",
        f"ZIP of SVG codes ({result['zip']['files']} files): {api}/download/zip",
    ]
    if result["failed"]:
        lines += [f"Failed items: {api}/items?status=failed",
                  f"Re-run them:  POST {api}/retry-failed"]
    lines += ["", "The links need your API token (Authorization: Bearer ...)."]
    return subject, "\n".join(lines) + "\n"


def claim_mail(storage, job_id: str) -> str:
    """The id of the batch's completion-mail job, chosen once and kept."""
    with storage.db(commit=True) as curs:
        curs.execute("update batch set mail_job_id = coalesce(mail_job_id, ?) "
                     "where job_id = ? returning mail_job_id", (str(uuid.uuid4()), job_id))
        return curs.fetchone()[0]
