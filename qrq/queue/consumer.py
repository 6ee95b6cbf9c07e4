"""The consumer qrq runs: huey's, plus a registration row and a heartbeat.

Operators (and ``/api/admin/queue-status``) see each consumer's host, pid,
worker count, start time and last heartbeat; a consumer whose heartbeat stops is
visibly gone. Worker processes' lease owners start with the consumer's id, so
the jobs a consumer is running can be listed.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid

from huey.consumer import Consumer

logger = logging.getLogger("qrq.queue.consumer")

HUEY_DEFAULT_POLLING = {"initial_delay": 0.1, "max_delay": 10.0, "backoff": 1.15}


class QrqConsumer(Consumer):
    def __init__(self, huey, **options):
        # huey's default polling backs off to 10 s when idle; unless the caller
        # chose other values, poll every QRQ_POLL_INTERVAL without backing off.
        if all(options.get(k, v) == v for k, v in HUEY_DEFAULT_POLLING.items()):
            options.update(initial_delay=huey.settings.poll_interval,
                           max_delay=huey.settings.poll_interval, backoff=1.0)
        super().__init__(huey, **options)
        self.consumer_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        huey.storage.consumer_id = self.consumer_id
        # The consumer's commits (leases, progress, outcomes) skip the fsync: an
        # application crash loses none of them, and a power cut can only roll back
        # the newest, whose jobs then run again (leases make that safe). Enqueues
        # from the web app stay fully synchronous: a job id handed out is on disk.
        huey.storage.close()
        huey.storage.synchronous = "normal"
        self._beating = threading.Event()

    def start(self):
        super().start()
        self._register()
        threading.Thread(target=self._beat, name="qrq-consumer-heartbeat",
                         daemon=True).start()

    def run(self):
        try:
            super().run()
        finally:
            self._beating.set()
            try:
                self.huey.storage.sql("delete from consumer where id = ?", (self.consumer_id,),
                                      commit=True)
            except Exception:
                logger.exception("could not deregister consumer %s", self.consumer_id)

    def _register(self) -> None:
        now = time.time()
        self.huey.storage.sql(
            "insert or replace into consumer (id, host, pid, started_at, heartbeat_at, "
            "workers) values (?, ?, ?, ?, ?, ?)",
            (self.consumer_id, socket.gethostname(), os.getpid(), now, now, self.workers),
            commit=True)

    def _beat(self) -> None:
        interval = max(1.0, self.huey.settings.lease_seconds / 3)
        while not self._beating.wait(interval):
            try:
                self.huey.storage.sql("update consumer set heartbeat_at = ? where id = ?",
                                      (time.time(), self.consumer_id), commit=True)
            except Exception:
                logger.exception("consumer heartbeat failed")
