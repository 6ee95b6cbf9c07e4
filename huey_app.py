"""Entry point for the consumer: ``huey_consumer huey_app.huey`` (or ``qrq worker``).

Importing a task module registers its tasks with the Huey instance.
"""

import tasks.pdf  # noqa: F401
from qrq.queue import huey  # noqa: F401  (the consumer looks it up here)
