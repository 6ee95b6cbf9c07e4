"""Huey instances for bench/drain.py: stock ``SqliteHuey`` and plain ``Huey`` on qrq's storage.

All carry the same no-op task. ``huey_consumer _drain_apps.huey`` (with ``bench/`` on
``PYTHONPATH``) builds the instance named by ``BENCH_DRAIN_VARIANT`` (``stock``,
``stock-normal``, ``plain`` or ``plain-normal``) on the file ``BENCH_DRAIN_DB``; the
benchmark itself calls :func:`build`. None imports ``qrq.queue``, so no qrq settings are read.
"""

from __future__ import annotations

import os

from huey import Huey, SqliteHuey
from huey.storage import SqliteStorage


class NormalSyncSqliteStorage(SqliteStorage):
    """Stock storage with ``synchronous=NORMAL`` (WAL syncs at checkpoints, not at every
    commit), the setting qrq's consumer uses for its own connections."""

    def _create_connection(self):
        conn = super()._create_connection()
        conn.execute("pragma synchronous = normal")
        return conn


def noop() -> None:
    """Do nothing (and return None, so no result is stored)."""


def build(variant: str, filename: str):
    """The huey instance of *variant* on *filename* and its no-op task wrapper.

    Every option is huey's default (WAL, huey's busy timeout, results on), so they
    differ only in their storage class.
    """
    if variant == "stock":
        huey = SqliteHuey("bench", filename=filename)
    elif variant == "stock-normal":
        huey = Huey("bench", storage_class=NormalSyncSqliteStorage, filename=filename)
    elif variant in ("plain", "plain-normal"):
        from qrq.queue.sqlite_storage import LeasedSqliteStorage

        huey = Huey("bench", storage_class=LeasedSqliteStorage, filename=filename)
        if variant == "plain-normal":
            huey.storage.close()
            huey.storage.synchronous = "normal"  # as QrqConsumer sets it
    else:
        raise ValueError(f"unknown variant {variant!r}")
    return huey, huey.task(name="noop")(noop)


if "BENCH_DRAIN_VARIANT" in os.environ:
    huey, noop_task = build(os.environ["BENCH_DRAIN_VARIANT"], os.environ["BENCH_DRAIN_DB"])
