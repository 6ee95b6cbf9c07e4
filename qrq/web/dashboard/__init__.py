"""The admin dashboard: server-rendered pages under ``/admin``, for admins only.

One blueprint (:mod:`.blueprint`, named "admin"); each module adds its part:
:mod:`.session` log-in, sessions and CSRF; :mod:`.filters` the job list's query
arguments; :mod:`.charts` the overview's SVG charts; :mod:`.schedule` periodic
tasks and their next runs; :mod:`.batches` a batch's items and retrying its failed ones;
:mod:`.pages` the other pages and actions; :mod:`.live` the JSON the pages poll to
stay current; :mod:`.bulk` retrying, canceling or discarding the selected jobs;
:mod:`.pauses` pausing and resuming job types; :mod:`.analytics` the analytics chart.
"""

from qrq.web.dashboard import analytics, batches, bulk, live, pages, pauses, schedule, session
from qrq.web.dashboard.blueprint import bp
from qrq.web.dashboard.session import SESSION_HOURS

__all__ = ["SESSION_HOURS", "analytics", "batches", "bp", "bulk", "live", "pages", "pauses",
           "schedule", "session"]
