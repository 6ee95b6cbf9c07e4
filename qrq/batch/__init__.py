"""Bulk QR generation (pure core): check a request, store its items, read them back.

A batch is one job of type ``batch`` plus one row per item in the queue
database (``batch_item``, keyed by ``(job_id, idx)``; see :mod:`qrq.queue.schema`) and
one row of counts (``batch``). Each item's payload is computed when the batch is
submitted, so a run (:mod:`qrq.batch.run`) only encodes and draws.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from qrq.appdb.db import app_db
from qrq.appdb.models import Template
from qrq.cards import options as opts
from qrq.errors import Conflict, NotFound, PayloadTooLarge, ValidationError
from qrq.queue.jobs import ACTIVE, public_view

ITEM_KEYS = {"template_id", "data", "title", "lines"}
ITEM_STATUSES = ("pending", "ok", "failed")
FORMATS = ("svg", "png")  # what the ZIP may hold per code; svg unless options.formats says
PAGE_ROWS = 500  # rows read at a time: memory stays flat in the number of items


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


def check_formats(value: Any, field: str = "options.formats") -> list[str]:
    """The ZIP's file formats per code: a non-empty list of "svg" and/or "png"."""
    if (not isinstance(value, list) or not value or any(v not in FORMATS for v in value)
            or len(set(value)) != len(value)):
        raise ValidationError('must be a non-empty list of "svg" and/or "png", each once',
                              field=field)
    return list(value)


def formats_of(options: dict[str, Any]) -> list[str]:
    """A stored batch's ZIP formats (batches from before the option: SVG)."""
    return options.get("formats", ["svg"])


def item_filenames(idx: int, payload: str, total: int, formats: Sequence[str]) -> list[str]:
    """The item's files in the ZIP, one per format."""
    return [item_filename(idx, payload, total, f".{fmt}") for fmt in formats]


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
    return opts.check_unicode(value, field)


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
                  job_id: str, max_items: int, *, margin_mm: float) -> BatchRequest:
    """Check a batch request and compute every item's payload; each template's cards
    must fit its page inside *margin_mm* (the print_margin_mm setting).

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
    raw = body.get("options")
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ValidationError("must be an object", field="options")
    if "items" in body and "copies" in raw:
        raise ValidationError("copies applies to template_ids; repeat items instead",
                              field="options.copies")
    copies = raw.get("copies", 1)
    if isinstance(copies, bool) or not isinstance(copies, int) or copies < 1:
        raise ValidationError("must be a positive integer", field="options.copies")
    options = opts.check_options({k: v for k, v in raw.items()
                                  if k not in ("copies", "formats")}, 1)
    options.pop("copies")
    if "formats" in raw:
        options["formats"] = check_formats(raw["formats"])
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
            # the layout fits this template's cards
            opts.build_spec(template, options, margin_mm=margin_mm)
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
    """A new batch of the failed items of *parent_id*; returns how many (0: none made).

    :raises Conflict: a retry of them has not ended yet (a form sent twice would run
        the same items twice).
    """
    with storage.db(commit=True) as curs:
        # The parent's row, held until commit: a second retry sent meanwhile waits here,
        # then sees this one's child below.
        curs.execute(f"select options from batch where job_id = ?{storage.for_update}",
                     (parent_id,))
        row = curs.fetchone()
        if row is None:
            raise NotFound(f"batch {parent_id} not found")
        # A child without a job record yet is one being queued right now.
        curs.execute("select batch.job_id from batch left join job on job.id = batch.job_id "
                     "where batch.parent_id = ? and (job.id is null or job.status in "
                     f"({','.join('?' * len(ACTIVE))})) limit 1", (parent_id, *ACTIVE))
        running = curs.fetchone()
        if running is not None:
            raise Conflict(f"the failed items of batch {parent_id} are being retried "
                           f"already, as batch {running[0]}")
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


MAX_RETRIES_LISTED = 50


def retries(storage, job_id: str) -> list[dict[str, Any]]:
    """The batches that re-ran *job_id*'s failed items, oldest first (the last
    :data:`MAX_RETRIES_LISTED`): each one's ``job_id``, ``total`` and job ``status``
    (None while it is being queued)."""
    rows = storage.sql("select * from (select batch.job_id, batch.total, job.status, "
                       "batch.created_at from batch left join job on job.id = batch.job_id "
                       "where batch.parent_id = ? order by batch.created_at desc limit ?) "
                       "as latest order by created_at",
                       (job_id, MAX_RETRIES_LISTED), results=True)
    return [{"job_id": child, "total": total, "status": status}
            for child, total, status, _ in rows]


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


def status_view(storage, job: dict[str, Any], admin: bool = False) -> dict[str, Any]:
    """A job's status document (:func:`qrq.queue.jobs.public_view`), with a batch's
    item counts (:func:`counts`): the API's and ``qrq jobs show --json``'s."""
    view = public_view(job, admin=admin)
    if job["type"] == "batch":
        view.update(counts(storage, job["id"]))
    return view


def item_filename(idx: int, payload: str, total: int, suffix: str = ".svg") -> str:
    """``00042-menu.qrcards.example-t-1-table-43.svg``: the item's index, then its payload."""
    slug = re.sub(r"^[a-z]+://", "", payload.strip(), flags=re.I)
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", slug).strip("-._")[:60] or "code"
    return f"{idx:0{max(5, len(str(total - 1)))}d}-{slug}{suffix}"


def list_items(storage, job_id: str, total: int, status: str | None = None,
               page: int = 1, per_page: int = 100, formats: Sequence[str] = ("svg",)
               ) -> tuple[list[dict[str, Any]], int]:
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
            files = item_filenames(idx, data, total, formats)
            item["output"] = {"file": files[0], "files": files}
        items.append(item)
    return items, matching


def rows_in_order(storage, sql: str, params: tuple) -> Iterator[tuple]:
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
    found: dict[int, dict] = {}
    with app_db.connection_context():
        for i in range(0, len(ids), 500):
            for template in Template.select().where(Template.id.in_(ids[i:i + 500])):
                found[template.id] = template.to_dict()
    return found


def claim_mail(storage, job_id: str) -> str:
    """The id of the batch's completion-mail job, chosen once and kept."""
    with storage.db(commit=True) as curs:
        curs.execute("update batch set mail_job_id = coalesce(mail_job_id, ?) "
                     "where job_id = ? returning mail_job_id", (str(uuid.uuid4()), job_id))
        return curs.fetchone()[0]
