"""Entry point for the consumer: ``huey_consumer huey_app.huey`` (or ``qrq worker``)."""

from qrq.queue import huey  # noqa: F401  (the consumer looks it up here)

import tasks.pdf  # noqa: F401,E402  (importing registers the tasks)
