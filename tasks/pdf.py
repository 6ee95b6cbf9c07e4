"""QR-PDF generation tasks."""

from qrq.cards.generate import generate_pdf
from qrq.queue import huey, job_task, progress


@job_task(name="pdf.generate")  # type and limits: qrq/queue/catalog.py
def generate_qr_pdf(template_id: int, options: dict, task=None) -> dict:
    """Render a template's QR cards to a PDF; progress per page."""
    return generate_pdf(huey.settings, task.id, template_id, options,
                        lambda percent, stage: progress(task, percent, stage))
