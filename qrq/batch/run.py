"""Running a batch (pure core): encode its pending items, then write its outputs.

A run has two phases:

1. *Encode*: the pending items, in index order, each to ``ok`` (its QR matrix,
   packed, is stored) or ``failed`` (its error). Results are written in chunks
   (every :data:`CHUNK` items or :data:`CHUNK_SECONDS`), in one transaction with
   the batch's counts and the job's progress. A run that dies loses at most one
   unwritten chunk; the next run starts at the first pending item.
2. *Assemble*: the combined PDF and the ZIP of SVGs are rebuilt from the stored
   items, streamed (a page, a file at a time), into temporary files stored as
   ``<job_id>.pdf`` and ``.zip`` in the artifact store. Rebuilding instead of
   appending means a re-run can never duplicate an output.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
import tempfile
import time
import zipfile
from collections.abc import Callable
from typing import Any

from qrq.artifacts import ArtifactStore
from qrq.batch import (
    counts,
    formats_of,
    get_batch,
    item_filenames,
    load_templates,
    rows_in_order,
)
from qrq.cards import options as opts
from qrq.cards.encoder import qr_rows
from qrq.cards.images import matrix_png, matrix_svg, pack_rows, unpack_matrix
from qrq.cards.pdf import PdfStream
from qrq.cards.qr import CardSheets
from qrq.errors import NotFound, QrqError
from qrq.queue import job_progress, jobs

CHUNK = 100  # items per result write
CHUNK_SECONDS = 0.5
ENCODE_SHARE = 90  # percent of the progress bar the encode phase takes


class NothingRendered(QrqError):
    """Every item of a batch failed: it writes no outputs, and ends failed."""

    def __init__(self, job_id: str, total: int):
        super().__init__(f"no item could be rendered: all {total} failed; see each item's "
                         f"error at /api/batch/{job_id}/items?status=failed "
                         f"(qrq batch items {job_id} --failed)")
        self.total = total


class _Specs:
    """Each template's card spec under the batch's options, and per-item text overrides."""

    def __init__(self, templates: dict[int, dict], options: dict[str, Any],
                 margin_mm: float):
        self.templates, self.options, self.margin_mm = templates, options, margin_mm
        self.cache: dict[int, Any] = {}

    def get(self, template_id: int, title: str | None = None, lines: str | None = None):
        """The spec, or None when the template no longer exists."""
        if template_id not in self.cache:
            template = self.templates.get(template_id)
            self.cache[template_id] = (None if template is None
                                       else opts.build_spec(template, self.options,
                                                          margin_mm=self.margin_mm))
        spec = self.cache[template_id]
        if spec is not None and (title is not None or lines is not None):
            spec = dataclasses.replace(
                spec, title=spec.title if title is None else title,
                lines=spec.lines if lines is None else tuple(json.loads(lines)))
        return spec


def render_code(matrix: list[list[bool]], data: str, fmt: str, spec) -> bytes:
    """One code's file as the ZIP holds it: in the card's colours and size (the
    defaults when its template is gone, *spec* None)."""
    style = (spec.quiet_zone, spec.fg_color, spec.bg_color, spec.qr_size_mm) if spec else ()
    if fmt == "png":
        return matrix_png(matrix, *style)
    return matrix_svg(matrix, *style, title=data).encode()


def item_code(storage, job_id: str, idx: int, fmt: str, options: dict[str, Any],
              templates: Callable[[list[int]], dict[int, dict]] = load_templates
              ) -> bytes | None:
    """An ok item's code as *fmt* (svg or png), the file the ZIP has or would have;
    None when the item has no code."""
    rows = storage.sql("select matrix, data, template_id, title, lines from batch_item "
                       "where job_id = ? and idx = ? and status = 'ok'", (job_id, idx),
                       results=True)
    if not rows:
        return None
    packed, data, template_id, title, lines = rows[0]
    # One code's file does not depend on the page layout: no page margin.
    spec = _Specs(templates([template_id]), options, 0.0).get(template_id, title, lines)
    return render_code(unpack_matrix(packed), data, fmt, spec)


def _write_chunk(storage, job_id: str, rows: list[tuple], total: int) -> bool:
    """Item results, the batch's counts and the job's progress, in one transaction;
    return whether a cancel was asked."""
    with storage.db(commit=True) as curs:
        curs.executemany("update batch_item set status = ?, matrix = ?, error = ? "
                         "where job_id = ? and idx = ? and status = 'pending'", rows)
        curs.execute("update batch set "
                     "completed = (select count(*) from batch_item where job_id = ? "
                     "and status = 'ok'), "
                     "failed = (select count(*) from batch_item where job_id = ? "
                     "and status = 'failed') where job_id = ? returning completed, failed",
                     (job_id, job_id, job_id))
        ok, failed = curs.fetchone()
        return job_progress.record_progress(curs, job_id, storage.owner,
                                    ENCODE_SHARE * (ok + failed) // max(1, total),
                                    f"encoding {ok + failed}/{total} ({failed} failed)")


def encode_pending(storage, job_id: str, total: int, specs: _Specs,
                   check: Callable[[], None]) -> tuple[int, bool]:
    """Encode the pending items in index order; return ``(encoded, canceled)``.

    *check* is called before each item (it raises on a timeout). A cancel
    request is seen before the first item and at each chunk's write (at most
    :data:`CHUNK` items or :data:`CHUNK_SECONDS` later); the loop stops there,
    what is done being written.
    """
    rows: list[tuple] = []
    encoded = 0
    job = jobs.get(storage, job_id)
    canceled = bool(job and job["cancel_requested"])
    flushed_at = time.monotonic()
    sql = ("select idx, template_id, data, title, lines from batch_item "
           "where job_id = ? and status = 'pending' and idx > ?")
    for idx, template_id, data, title, lines in rows_in_order(storage, sql, (job_id,)):
        if canceled:
            break
        check()
        try:
            spec = specs.get(template_id, title, lines)
            if spec is None:
                raise NotFound(f"template {template_id} no longer exists")
            rows.append(("ok", pack_rows(*qr_rows(data, spec.error_correction)),
                         None, job_id, idx))
        except Exception as exc:  # one bad item never fails the batch
            message = str(exc) if isinstance(exc, ValueError | QrqError) else (
                f"{type(exc).__name__}: {exc}")
            rows.append(("failed", None, message, job_id, idx))
        encoded += 1
        if len(rows) >= CHUNK or time.monotonic() - flushed_at >= CHUNK_SECONDS:
            canceled = _write_chunk(storage, job_id, rows, total)
            rows, flushed_at = [], time.monotonic()
    _write_chunk(storage, job_id, rows, total)
    return encoded, canceled


def _report(storage, job_id: str, percent: int, stage: str) -> None:
    with storage.db(commit=True) as curs:
        job_progress.record_progress(curs, job_id, storage.owner, percent, stage)


def assemble(storage, store: ArtifactStore, job_id: str, total: int, specs: _Specs,
             title: str = "QR cards") -> dict[str, Any]:
    """Rebuild ``<job_id>.pdf`` and ``<job_id>.zip`` from the stored items, streamed,
    into *store*; both are stored before the outputs are recorded."""
    sql = ("select idx, template_id, data, title, lines, status, matrix, error, source_idx "
           "from batch_item where job_id = ? and status != 'pending' and idx > ?")
    formats = formats_of(specs.options)
    codes, reported = 0, time.monotonic()
    names = {suffix: f"{job_id}.{suffix}" for suffix in ("pdf", "zip")}
    with store.write(names["pdf"]) as pdf_path, store.write(names["zip"]) as zip_path:
        with open(pdf_path, "wb") as pdf_out, \
                zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as archive, \
                tempfile.TemporaryFile("w+", newline="", encoding="utf-8",
                                       dir=zip_path.parent) as manifest_out:
            sheets = CardSheets(PdfStream(pdf_out, title))
            manifest = csv.writer(manifest_out)
            manifest.writerow(["idx", "source_idx", "template_id", "status", "file", "data",
                               "error"])
            for idx, template_id, data, item_title, lines, status, packed, error, source \
                    in rows_in_order(storage, sql, (job_id,)):
                name = ""
                if status == "ok":
                    matrix = unpack_matrix(packed)
                    spec = specs.get(template_id, item_title, lines)
                    if spec is not None:
                        sheets.add(spec, data, matrix)
                    files = item_filenames(idx, data, total, formats)
                    for fmt, name in zip(formats, files, strict=True):
                        # A PNG is deflated inside already: stored as is.
                        archive.writestr(name, render_code(matrix, data, fmt, spec),
                                         zipfile.ZIP_STORED if fmt == "png"
                                         else zipfile.ZIP_DEFLATED)
                    codes += len(files)
                    name = ";".join(files)
                manifest.writerow([idx, "" if source is None else source, template_id,
                                   status, name, _cell(data), _cell(error or "")])
                if time.monotonic() - reported >= CHUNK_SECONDS:
                    reported = time.monotonic()
                    _report(storage, job_id, ENCODE_SHARE + (99 - ENCODE_SHARE) * idx // total,
                            f"writing PDF and ZIP {idx + 1}/{total}")
            pages = sheets.close()
            manifest_out.seek(0)
            with archive.open("manifest.csv", "w") as entry:
                shutil.copyfileobj(manifest_out.buffer, entry)
        outputs = {"pdf": {"file": names["pdf"], "pages": pages, "cards": sheets.cards,
                           "bytes": pdf_path.stat().st_size},
                   "zip": {"file": names["zip"], "files": codes, "formats": formats,
                           "bytes": zip_path.stat().st_size}}
    storage.sql("update batch set outputs = ? where job_id = ?",
                (json.dumps(outputs), job_id), commit=True)
    return outputs


def run_batch(storage, store: ArtifactStore, job_id: str, check: Callable[[], None],
              templates: Callable[[list[int]], dict[int, dict]] = load_templates, *,
              margin_mm: float) -> dict[str, Any]:
    """Run (or resume) a batch: encode its pending items, then write its outputs, the
    cards *margin_mm* (the print_margin_mm setting) from every page edge.

    :raises NotFound: the batch's items are gone. :raises NothingRendered: every item
        failed (nothing is written). :raises jobs.JobCanceled: a
        cancel arrived; the items done so far are kept and their outputs written.
    """
    batch = get_batch(storage, job_id)
    if batch is None:
        raise NotFound(f"batch {job_id} has no items")
    total = batch["total"]
    ids = [t for t, in storage.sql("select distinct template_id from batch_item "
                                   "where job_id = ?", (job_id,), results=True)]
    specs = _Specs(templates(ids), batch["options"], margin_mm)
    done_before = batch["completed"] + batch["failed"]
    if done_before:
        _report(storage, job_id, ENCODE_SHARE * done_before // max(1, total),
                f"resuming after {done_before}/{total} items")
    began = time.monotonic()
    encoded, canceled = encode_pending(storage, job_id, total, specs, check)
    if not canceled and not counts(storage, job_id)["completed"]:
        # Outputs of no card would be a blank page and an empty ZIP: fail instead, and
        # leave the reasons where they are, on the items.
        raise NothingRendered(job_id, total)
    encoded_at = time.monotonic()
    _report(storage, job_id, ENCODE_SHARE, "writing PDF and ZIP")
    outputs = assemble(storage, store, job_id, total, specs)
    seconds = {"encode": round(encoded_at - began, 3),
               "outputs": round(time.monotonic() - encoded_at, 3)}
    done = counts(storage, job_id)
    if canceled:
        kept = done["completed"] + done["failed"]
        _report(storage, job_id, ENCODE_SHARE * kept // max(1, total),
                f"canceled after {kept}/{total} items; their PDF and ZIP are kept")
        raise jobs.JobCanceled(f"canceled while running; the {kept} items done so far "
                               "are kept, with their PDF and ZIP")
    return {**done, "success_rate": round(done["completed"] / max(1, total), 4),
            "resumed_after": done_before, "encoded_this_run": encoded, "seconds": seconds,
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
        f"ZIP of {' and '.join(f.upper() for f in result['zip'].get('formats', ['svg']))} "
        f"codes ({result['zip']['files']} files): {api}/download/zip",
    ]
    if result["failed"]:
        lines += [f"Failed items: {api}/items?status=failed",
                  f"Re-run them:  POST {api}/retry-failed"]
    lines += ["", "The links need your API token (Authorization: Bearer ...)."]
    return subject, "\n".join(lines) + "\n"


def failure_mail(job_id: str, total: int, base_url: str) -> tuple[str, str]:
    """Subject and body of the mail sent when no item of a batch could be rendered."""
    api = f"{base_url.rstrip('/')}/api/batch/{job_id}"
    return (f"qrq batch failed: 0/{total} codes", "\n".join([
        f"Your batch {job_id} failed: none of its {total} items could be rendered, so it "
        "has no PDF and no ZIP.", "",
        f"Each item's error: {api}/items?status=failed",
        f"Re-run them:       POST {api}/retry-failed", "",
        "The links need your API token (Authorization: Bearer ...)."]) + "\n")


def _cell(text: str) -> str:
    """*text* for the manifest: a leading ``'`` before ``= + - @`` (or a tab or CR), so
    that a spreadsheet shows an item's payload rather than running it as a formula."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
