"""Analytics jobs: compute a time-based report across the scan databases; keep popular
reports warm."""

from qrq.analytics import cache as analytics_cache
from qrq.analytics.query import ReportQuery
from qrq.analytics.submit import enqueue_report
from qrq.queue import huey, job_task, periodic_job, progress


@job_task(name="analytics.time_based")  # type, limits, schedules: qrq/queue/catalog.py
def time_based_report(params: dict, task=None) -> dict:
    """Read every scan database (read-only) for one report and cache the result. Child
    processes read them, so that this long-lived worker keeps its memory."""
    return analytics_cache.compute_report(
        huey.storage, huey.settings, ReportQuery.from_dict(params),
        seconds=task.time_remaining, here=False,
        progress=lambda percent, stage: progress(task, percent, stage))


@periodic_job(name="analytics.warm_up")
def warm_up_reports(task=None) -> dict:
    """Every 5 minutes: recompute the most requested reports that expire soon."""
    return analytics_cache.warm_up(
        huey.storage, huey.settings,
        lambda job_id, query: enqueue_report(query, job_id, None))
