"""The consumer qrq runs: huey's, plus a registration row, a heartbeat, and workers
that die with it.

Operators (and ``/api/admin/queue-status``) see each consumer's host, pid,
worker count, start time and last heartbeat; a consumer whose heartbeat stops is
visibly gone. Worker processes' lease owners start with the consumer's id, so
the jobs a consumer is running can be listed. A worker process whose consumer
died (``kill -9``, the OOM killer) gives its job back and exits, rather than run
on under PID 1 while every monitor says no consumer runs.
"""

from __future__ import annotations

import ctypes
import logging
import mmap
import multiprocessing
import os
import signal
import socket
import struct
import threading
import time
import uuid

from huey.constants import WORKER_PROCESS
from huey.consumer import Consumer, ProcessEnvironment, Worker

from qrq.artifacts import identity
from qrq.errors import QrqError, StorageFull, TransientError, Unavailable
from qrq.queue import catalog, signing
from qrq.queue.connections import JOURNAL_SIZE_LIMIT
from qrq.queue.missed_runs import CatchUpScheduler
from qrq.queue.priority import lower_priority
from qrq.queue.process_lock import ProcessLock

logger = logging.getLogger("qrq.queue.consumer")

HUEY_DEFAULT_POLLING = {"initial_delay": 0.1, "max_delay": 10.0, "backoff": 1.15}
ORPHAN_SIGNAL = signal.SIGUSR1  # huey's consumer uses INT, TERM and HUP
ORPHAN_CHECK = 1.0  # seconds between parent checks where prctl is not available
ORPHAN_GRACE = 10.0  # seconds an orphaned worker gets to give its job back
_PR_SET_PDEATHSIG = 1
# The consumer's commits checkpoint the queue's WAL (RESTART: the next commit starts it
# over and cuts the file to JOURNAL_SIZE_LIMIT) once it passes WAL_CHECKPOINT_BYTES
# (ThreadedSqliteStorage.restart_wal_after_commit). A thread looks every WAL_CHECK
# seconds for a WAL left big with nothing written for WAL_IDLE seconds (a burst's end)
# and truncates it.
WAL_CHECKPOINT_BYTES = JOURNAL_SIZE_LIMIT
WAL_CHECK = 0.25
WAL_IDLE = 1.0
WAL_CHECKPOINT_WAIT = 0.5  # seconds a checkpoint may hold writers while readers finish


def _die_with_parent(signum: int) -> bool:
    """Ask Linux to send *signum* to this process when its parent dies (prctl
    PR_SET_PDEATHSIG); False where that is not available."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(signum), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _about_an_outage(record: logging.LogRecord) -> bool:
    """Whether *record* is one :class:`StorageFullLog` decides on: an outage's error, or
    the storage's line that it is over."""
    return bool(record.__dict__.get("storage_writable") or record.__dict__.get(
        "database_reachable") or (record.exc_info and isinstance(
            record.exc_info[1], StorageFull | Unavailable)))


class StorageFullLog(logging.Filter):
    """Logs a full disk, or a queue database that cannot be reached, once a minute as
    one line, instead of a traceback per poll.

    While the disk is full every write fails (while the database server is down or
    restarting, every statement), and huey's loops log each failed poll with its
    traceback (thousands of lines a second). Of the records whose exception is
    :class:`StorageFull` or :class:`Unavailable`, the first in each *interval* passes
    as one line and the rest are dropped; of the storage's "writable again" or
    "reachable again" records, the first after that. The time of the last line lives
    in memory shared with the forked workers, and a process-shared lock makes reading
    and setting it one step, so the consumer as a whole logs one line of each even when
    its workers meet the outage at the same instant.
    """

    SUFFIX = {StorageFull: "work resumes by itself when space is freed",
              Unavailable: "work resumes by itself when it is back"}

    def __init__(self, interval: float = 60.0):
        super().__init__()
        self.interval = interval
        # Anonymous and shared, so forked workers see it: when the last outage line
        # was logged, and whether its "again" line was.
        self._shared = mmap.mmap(-1, 16)
        self._lock = multiprocessing.Lock()

    @property
    def _logged_at(self) -> float:
        return struct.unpack("d", self._shared[:8])[0]

    @_logged_at.setter
    def _logged_at(self, value: float) -> None:
        self._shared[:8] = struct.pack("d", value)

    @property
    def _recovered(self) -> bool:
        return struct.unpack("d", self._shared[8:16])[0] > 0

    @_recovered.setter
    def _recovered(self, value: bool) -> None:
        self._shared[8:16] = struct.pack("d", 1.0 if value else 0.0)

    def filter(self, record: logging.LogRecord) -> bool:
        if not _about_an_outage(record):  # most records (two per job): no lock to take
            return True
        verdict = record.__dict__.get("qrq_verdict")  # another handler decided
        if verdict is None:
            # A worker killed while holding the lock must not silence the others' logs.
            locked = self._lock.acquire(timeout=1.0)
            try:
                verdict = self._decide(record)
            finally:
                if locked:
                    self._lock.release()
            record.qrq_verdict = verdict
        return verdict

    def _decide(self, record: logging.LogRecord) -> bool:
        if record.__dict__.get("storage_writable") or record.__dict__.get(
                "database_reachable"):
            # Once per outage logged; the clock is kept, so another process that meets
            # the end of the same outage late does not log it again.
            verdict = self._logged_at > 0 and not self._recovered
            self._recovered = True
            return verdict
        exc = record.exc_info[1]
        now = time.time()
        if now - self._logged_at < self.interval:
            return False
        self._logged_at, self._recovered = now, False
        suffix = self.SUFFIX[StorageFull if isinstance(exc, StorageFull) else Unavailable]
        record.args = (record.getMessage(), exc)
        record.msg = f"%s: %s (logged once a minute while it lasts; {suffix})"
        record.exc_info = record.exc_text = None
        return True

    def install(self) -> None:
        """Filter every handler a consumer's records can reach, and quiet the
        PostgreSQL pool's line per failed reconnect (the one outage line says it)."""
        logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
        for handler in {*logging.getLogger().handlers, *logging.getLogger("huey").handlers,
                        logging.lastResort}:
            if handler is not None:
                handler.addFilter(self)


TASK_FAILED = "Unhandled exception in task %s."  # huey's line (api.py) for a task's error


class StatedFailureLog(logging.Filter):
    """Logs a job that failed for a reason qrq states (bad input, a template deleted
    meanwhile, a backup already running: a :class:`QrqError` below 500 that is not a
    ``TransientError``, which the task wrapper fails at once) as one warning line, not
    huey's "Unhandled exception" error with a traceback: the traceback points at a
    check, not at a bug, retrying cannot help, and the job records the reason."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, QrqError) and not isinstance(exc, TransientError) \
                and exc.status < 500 and record.msg == TASK_FAILED:
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg = "task %s failed, not retried: %s%s"
            record.args = (record.args[0], f"{exc.field}: " if exc.field else "", exc.message)
            record.exc_info = record.exc_text = None
        return True

    def install(self) -> None:
        """On huey's own logger, where it logs a task's exception (so every handler
        sees the one line)."""
        logging.getLogger("huey").addFilter(self)


class OrphanAwareProcessEnvironment(ProcessEnvironment):
    """huey's process workers, which stop when their consumer dies.

    Each worker (and the scheduler) gets :data:`ORPHAN_SIGNAL` when the consumer
    dies: from the kernel (PR_SET_PDEATHSIG), or from a thread that watches the
    parent pid where that is not available. It then sets the stop flag, interrupts
    a running task (huey then gives its lease back, as on SIGTERM) and exits; one
    that has not exited after :data:`ORPHAN_GRACE` seconds (stuck in C code) exits
    hard, and its lease lapses.
    """

    def __init__(self, *args):
        super().__init__(*args)
        self.consumer_pid = os.getpid()
        self.stop_flag = None

    def get_stop_flag(self):
        self.stop_flag = super().get_stop_flag()
        return self.stop_flag

    def init_child(self, process):
        super().init_child(process)
        if isinstance(process, Worker):  # bulk work yields to the web app; not the scheduler
            settings = process.huey.settings
            lower_priority(settings.worker_nice, settings.worker_io_priority)
        parent = self.consumer_pid

        def orphaned(signum, frame):
            signal.signal(ORPHAN_SIGNAL, signal.SIG_IGN)  # once
            logger.warning("consumer pid %d died: this worker gives its job back and exits",
                           parent)
            threading.Thread(target=self._exit_after_grace, daemon=True).start()
            self.stop_flag.set()
            process.huey.storage.stop_waiting()
            # A task leased but not yet in flight is given back as it starts.
            process.huey.stopping = True
            if process.huey._tasks_in_flight:
                raise KeyboardInterrupt  # huey releases the task's lease

        signal.signal(ORPHAN_SIGNAL, orphaned)
        if not _die_with_parent(ORPHAN_SIGNAL):
            threading.Thread(target=self._watch_parent, args=(parent,), daemon=True,
                             name="qrq-parent-watch").start()
        elif os.getppid() != parent:  # died before the request took effect
            os.kill(os.getpid(), ORPHAN_SIGNAL)

    @staticmethod
    def _watch_parent(parent: int) -> None:
        while os.getppid() == parent:
            time.sleep(ORPHAN_CHECK)
        os.kill(os.getpid(), ORPHAN_SIGNAL)

    @staticmethod
    def _exit_after_grace() -> None:
        time.sleep(ORPHAN_GRACE)
        logger.error("worker %d did not stop %gs after its consumer died; exiting now "
                     "(its lease lapses)", os.getpid(), ORPHAN_GRACE)
        os._exit(1)


class QrqConsumer(Consumer):
    scheduler_class = CatchUpScheduler  # queues periodic runs an outage made it miss

    def __init__(self, huey, **options):
        taken = set(huey.storage.accept_types)
        known = huey.declared_job_types  # with the task modules' (imported by now)
        # A typo in a role would make a host take every type, or none; in QRQ_TYPE_CAPS
        # (which replaces the defaults) it would drop every cap. Caps act only in
        # consumers, so they are checked here, where custom job types are known.
        problem = catalog.unknown_job_types(
            taken | set(huey.storage.exclude_types), " in --types/--exclude-types "
            "(QRQ_WORKER_JOB_TYPES, QRQ_WORKER_EXCLUDE_JOB_TYPES)", known,
        ) or catalog.unknown_job_types(huey.storage.caps, " in QRQ_TYPE_CAPS", known)
        if problem:
            raise SystemExit(f"Error: {problem}")
        if taken and taken <= set(huey.storage.exclude_types):
            raise SystemExit(f"Error: --exclude-types (QRQ_WORKER_EXCLUDE_JOB_TYPES) excludes "
                             f"every type --types (QRQ_WORKER_JOB_TYPES) takes, "
                             f"{', '.join(sorted(taken))}: this consumer would run no job")
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
        huey.storage.synchronous = "normal"
        if huey.storage.database == "sqlite":  # PostgreSQL checkpoints its own WAL
            huey.storage.wal_restart_bytes = WAL_CHECKPOINT_BYTES
            # The workers queue for SQLite's write lock on one lock of their own, which
            # hands it over at once (SQLite's busy handler retries after 1, 2, 5, 10 ms...).
            huey.storage.writers = ProcessLock("qrq-writers")
        huey.storage.reset_connections()
        huey.storage.lease_ahead = True  # each completion leases the worker's next job
        # A dequeue with nothing to do waits for work itself: on PostgreSQL for a NOTIFY
        # (or a slow poll), on SQLite for its next poll in one schedule the workers
        # share, whose lead alone polls while idle, so 4 idle workers poll as often as
        # 1. A poll that backs off (-b above 1) stays huey's, each worker on its own.
        huey.storage.wait_for_wakeups(
            min(self.default_delay, self.max_delay) if self.backoff == 1.0 else None,
            stop=self.stop_flag, workers=self.workers)
        self._beating = threading.Event()
        self.started_at = time.time()

    def get_environment(self, worker_type):
        if worker_type == WORKER_PROCESS:
            return OrphanAwareProcessEnvironment(self._graceful_sig, self._interrupt_sig)
        return super().get_environment(worker_type)

    def start(self):
        StorageFullLog().install()  # before the workers fork: they share its clock
        StatedFailureLog().install()
        # Registered before any worker can lease a job: the consumers page and the
        # alerts never see a running job of an unknown consumer. (huey's start closes
        # this connection before it forks the workers, which set their own handlers.)
        # The stop signals are handled first: one that comes now ends run() cleanly,
        # and run() deletes the row again.
        self._set_signal_handlers()
        self.started_at = time.time()
        try:
            self._register()
        except StorageFull:  # the heartbeat registers it once space is back
            logger.exception("could not register consumer %s", self.consumer_id)
        identity.warn_if_not_shared(self.huey.storage, self.huey.settings)
        super().start()
        threading.Thread(target=self._beat, name="qrq-consumer-heartbeat",
                         daemon=True).start()
        if self.huey.storage.database == "sqlite":  # PostgreSQL checkpoints its own WAL
            threading.Thread(target=self._bound_wal, name="qrq-wal-checkpoint",
                             daemon=True).start()

    def stop(self, graceful=False):
        self.stop_flag.set()
        self.huey.storage.stop_waiting()  # before huey joins the workers
        super().stop(graceful)

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
        """Write this consumer's row with a fresh heartbeat (every heartbeat does, so a
        row that could not be written, or was purged, comes back)."""
        storage = self.huey.storage
        storage.sql(
            "insert into consumer (id, host, pid, started_at, heartbeat_at, workers, "
            "job_types, exclude_job_types) values (?, ?, ?, ?, ?, ?, ?, ?) "
            "on conflict (id) do update set heartbeat_at = excluded.heartbeat_at",
            (self.consumer_id, socket.gethostname(), os.getpid(), self.started_at,
             time.time(), self.workers, ",".join(storage.accept_types) or None,
             ",".join(storage.exclude_types) or None), commit=True)

    def _bound_wal(self) -> None:
        """Truncate a WAL that a burst left big once nothing has been written for
        WAL_IDLE seconds.

        While jobs run, the commits that push the WAL past WAL_CHECKPOINT_BYTES
        checkpoint it themselves; after the last one of a burst, the file keeps its size
        until the next commit starts it over, which on an idle queue can be minutes away.
        Not on a full disk: a WAL started over would let a few writes through into its
        old space and fail again, over and over.
        """
        storage = self.huey.storage
        seen, since = None, time.monotonic()  # the WAL's size, unchanged since when
        try:
            while not self._beating.wait(WAL_CHECK):
                size = storage.wal_size()
                if size != seen:
                    seen, since = size, time.monotonic()
                    continue
                if (size <= WAL_CHECKPOINT_BYTES or time.monotonic() - since < WAL_IDLE
                        or storage.is_full()):
                    continue
                try:
                    storage.checkpoint("truncate", wait=WAL_CHECKPOINT_WAIT)
                except Exception:
                    logger.exception("WAL checkpoint failed")
                since = time.monotonic()  # busy (a long reader): try again a while later
        finally:
            storage.close()  # this thread's connection

    def _beat(self) -> None:
        interval = max(1.0, self.huey.settings.lease_seconds / 3)
        while not self._beating.wait(interval):
            try:
                self._register()
                refused = signing.refusal(self.huey.storage, self.huey.serializer)
            except Exception:
                logger.exception("consumer heartbeat failed")
                continue
            if refused:
                # The key was replaced (qrq key adopt): every job this consumer took
                # would fail its signature check. It stops as on its graceful signal.
                logger.error("stopping: %s", refused)
                os.kill(os.getpid(), self._graceful_sig)
                return
