"""Analytics jobs: compute a time-based report across the scan databases; keep popular
reports warm."""

from huey import crontab

from qrq.analytics import cache as analytics_cache
from qrq.analytics.query import ReportQuery
from qrq.queue import huey, job_task, periodic_job, progress, submit
from qrq.sqlite_deadline import interrupt_when

settings = huey.settings


@job_task("analytics", name="analytics.time_based", timeout=settings.analytics_timeout,
          retries=2, expires=settings.job_expiry)
def time_based_report(params: dict, task=None) -> dict:
    """Read every scan database (read-only) for one report and cache the result."""
    return analytics_cache.compute_report(
        huey.storage, huey.settings, ReportQuery.from_dict(params),
        limit=lambda conn: interrupt_when(conn, lambda: task.is_timed_out),
        seconds=task.time_remaining,
        progress=lambda percent, stage: progress(task, percent, stage))


def enqueue_report(query: ReportQuery, job_id: str, owner_id: int | None) -> str:
    """Queue the computation of *query* under the *job_id* a cache claim chose."""
    return submit(time_based_report, query.to_dict(), owner_id=owner_id,
                  params=query.to_dict(), id=job_id)


@periodic_job("analytics", name="analytics.warm_up", schedule=crontab(minute="*/5"),
              timeout=120)
def warm_up_reports(task=None) -> dict:
    """Every 5 minutes: recompute the most requested reports that expire soon."""
    return analytics_cache.warm_up(
        huey.storage, huey.settings,
        lambda job_id, query: enqueue_report(query, job_id, None))
