"""Entry point for the consumer: ``huey_consumer huey_app.huey`` (or ``qrq worker``).

Importing a task module registers its tasks with the Huey instance; the
instance is then opened from the settings (QRQ_* environment variables).
"""

import tasks.alerts  # noqa: F401
import tasks.analytics  # noqa: F401
import tasks.backup  # noqa: F401
import tasks.batch  # noqa: F401
import tasks.mail  # noqa: F401
import tasks.maintenance  # noqa: F401
import tasks.pdf  # noqa: F401
import tasks.retention  # noqa: F401
import tasks.webhook  # noqa: F401
from qrq.artifacts import store_or_exit
from qrq.backup.files import backups_dir_or_exit
from qrq.config import settings_or_exit
from qrq.errors import QrqError
from qrq.queue import huey, load_task_modules

if not huey.initialised:  # `qrq worker` has opened it already
    huey.init_or_exit(settings_or_exit())
store_or_exit(huey.settings)  # jobs' outputs must have somewhere to go
backups_dir_or_exit(huey.settings)  # and backups (a file there: one line, not retries)
try:
    load_task_modules(huey.settings)
except QrqError as exc:  # a module QRQ_TASK_MODULES names is not there: one line
    raise SystemExit(f"Error: {exc.message}") from None
