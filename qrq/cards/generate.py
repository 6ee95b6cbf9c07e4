"""The QR-PDF job: load a template, apply the request's options, render the PDF."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from qrq.appdb.db import app_db, bind
from qrq.appdb.models import Template
from qrq.artifacts import open_store
from qrq.cards import options as opts
from qrq.cards.qr import write_pdf
from qrq.config import Settings
from qrq.errors import ValidationError


def artifact_name(job_id: str, suffix: str = ".pdf") -> str:
    """The name of a job's output in the artifact store; *job_id* is checked by the
    caller to be a UUID."""
    return f"{job_id}{suffix}"


def prepare(template: dict, options: dict, max_copies: int, job_id: str = "", *,
            margin_mm: float) -> tuple:
    """Check *options* against *template*, its cards *margin_mm* from the page edges;
    return ``(spec, payloads)`` or raise 422."""
    options = opts.check_options(options, max_copies)
    spec = opts.build_spec(template, options, margin_mm=margin_mm)
    pattern = options.get("data", template["payload"])
    field = "options.data" if "data" in options else "data"
    # Checked before the job exists (no *job_id*): an id as long as any, so that a
    # payload with {job_id} that fits now fits the job's.
    values = {"template_id": template["id"], "domain": template["domain"],
              "job_id": job_id or str(uuid.UUID(int=0))}
    opts.check_fits(pattern, spec.error_correction, field, copy=options["copies"], **values)
    try:
        payloads = opts.payloads(pattern, options["copies"], **values)
    except (KeyError, IndexError, ValueError) as exc:
        raise ValidationError(f"bad placeholder: {exc}", field=field) from None
    return spec, payloads


def generate_pdf(settings: Settings, job_id: str, template_id: int, options: dict,
                 report: Callable[[float, str], None]) -> dict:
    """Render the cards of one PDF job into the artifact store as ``<job_id>.pdf``; the
    job finishes only once the file is stored.

    :raises NotFound: the template was deleted after the job was enqueued.
    :raises StoreUnavailable: the artifact store is missing or cannot be reached.
    """
    report(0, "loading template")
    bind(settings)
    with app_db.connection_context():
        template = Template.get_by_id_or_404(template_id).to_dict()
    spec, payloads = prepare(template, options, settings.max_copies, job_id,
                             margin_mm=settings.print_margin_mm)

    last = [-1]

    def page_done(page: int, pages: int) -> None:
        percent = int(5 + 90 * page / pages)
        if percent != last[0]:  # one write per percent, not per page
            last[0] = percent
            report(percent, f"rendering page {page}/{pages}")

    name = artifact_name(job_id)
    with open_store(settings).write(name) as tmp:
        with open(tmp, "wb") as out:
            pages, cards = write_pdf(spec, payloads, out, progress=page_done,
                                     title=template["name"])
        size = tmp.stat().st_size
    return {"artifact": name, "pages": pages, "cards": cards, "bytes": size,
            "content_type": "application/pdf"}
