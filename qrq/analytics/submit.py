"""Submitting a report computation (web app, CLI and the consumer's warm-up)."""

from __future__ import annotations

from qrq.analytics.query import ReportQuery
from qrq.queue import Admission, submit


def enqueue_report(query: ReportQuery, job_id: str, owner_id: int | None,
                   admission: Admission | None = None) -> str:
    """Queue the computation of *query* under the *job_id* a cache claim chose."""
    return submit("analytics.time_based", query.to_dict(), owner_id=owner_id,
                  params=query.to_dict(), id=job_id, admission=admission)
