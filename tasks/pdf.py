"""QR-PDF generation tasks."""

from qrq.cards.generate import generate_pdf
from qrq.queue import huey, job_task, progress

settings = huey.settings


@job_task("pdf", name="pdf.generate", timeout=settings.pdf_timeout,
          retries=settings.pdf_retries, expires=settings.job_expiry)
def generate_qr_pdf(template_id: int, options: dict, task=None) -> dict:
    """Render a template's QR cards to a PDF; progress per page."""
    return generate_pdf(huey.settings, task.id, template_id, options,
                        lambda percent, stage: progress(task, percent, stage))
