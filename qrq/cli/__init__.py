"""The ``qrq`` command: set up, run, and inspect qrq from a terminal.

``base`` defines the group; each module here adds one family of commands to it.
"""

from qrq.cli import (  # noqa: F401,E501  (register commands)
    analytics,
    backup,
    batch,
    database,
    jobs,
    key,
    migrate,
    ops,
    pauses,
    schedule,
    setup,
    templates,
    users,
)
from qrq.cli.base import main

__all__ = ["main"]
