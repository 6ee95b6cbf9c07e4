"""``QrqHuey``: huey with leased storage (SQLite or PostgreSQL, by
``QRQ_DATABASE_URL``), signed payloads and job records.

Every enqueue writes a job record in the same transaction; each run's outcome
(finished, failed, retrying, canceled, expired) is written in the transaction
that releases its lease; a retry waits with exponential backoff plus jitter; an
interrupted run gives its lease back. An instance is built empty and opened by
:meth:`QrqHuey.init` (see :mod:`qrq.queue`).
"""

from __future__ import annotations

import datetime
import logging
import random
import threading
import time
import uuid
from typing import Any

from huey import signals as S
from huey.utils import normalize_time

from qrq.config import Settings
from qrq.errors import Conflict, NotFound, QrqError, Unavailable
from qrq.queue import catalog, huey_private, job_progress, jobs, signing
from qrq.queue.admission import Admission
from qrq.queue.catalog import TaskSpec
from qrq.queue.consumer import QrqConsumer
from qrq.queue.end_hooks import EndHooks
from qrq.queue.postgres import LeasedPostgresStorage
from qrq.queue.revocation import RevokeByCancel
from qrq.queue.sqlite_storage import LeasedSqliteStorage
from qrq.queue.uninitialised import NoStorage, not_initialised

logger = logging.getLogger("qrq.queue")

_RELEASE = "release"
# The registered name of a qrq task is "qrq.<name>" (see qrq.queue.job_task).
MODULE = "qrq"
# The namespace of periodic runs' job ids (uuid5 of the task's name and minute slot).
PERIODIC_SLOTS = uuid.UUID("6f1d4c1e-8a53-4a8e-9a43-5e7b0c2f9d10")


class QrqHuey(RevokeByCancel, EndHooks, huey_private.HueyHooks):
    storage_class = LeasedSqliteStorage

    def __init__(self, settings: Settings | None = None, name: str = "qrq"):
        self._settings: Settings | None = None
        # The key in effect checked against the queue's at init, and before enqueues.
        self._key_checked, self.key_watch = False, signing.KeyWatch()
        self._state = threading.local()
        self._declared: list[tuple[type, TaskSpec]] = []
        # Set in a worker process whose consumer died (qrq.queue.consumer): it runs
        # nothing more, and gives back what it has leased.
        self.stopping = False
        # Set when this process's key turned out to be replaced (qrq key adopt --force)
        # as it read a job: it takes no more jobs, and its consumer stops at its next
        # heartbeat.
        self.key_replaced = False
        super().__init__(name, results=False, utc=True)
        self.post_execute(name="qrq_record_outcome")(self._record_outcome)
        self.signal(S.SIGNAL_EXPIRED)(self._on_expired)
        self.signal(S.SIGNAL_REVOKED)(self._on_revoked)
        self.signal(S.SIGNAL_INTERRUPTED)(self._on_interrupted)
        # A stopping worker gives back the row its last completion leased ahead.
        self.on_shutdown(name="qrq_give_back_ahead")(
            lambda: self.initialised and self.storage.give_back_ahead())
        if settings is not None:
            self.init(settings)

    def create_storage(self):
        if self._settings is None:
            return NoStorage()
        return super().create_storage()

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            raise not_initialised()
        return self._settings

    @settings.setter
    def settings(self, settings: Settings) -> None:
        self.init(settings)

    @property
    def initialised(self) -> bool:
        return self._settings is not None

    def init(self, settings: Settings, migrate: bool = True, key_check: bool = True) -> None:
        """Open the queue of *settings* (again, if they changed); apply each declared
        task's limits from them. Creates the data directory and queue.db, and (unless not
        *migrate*: ``qrq migrate`` does) the schema steps it lacks. The key in effect must
        be the queue's (:mod:`qrq.queue.signing`), unless not *key_check* (``qrq key``)."""
        if settings == self._settings and (self._key_checked or not key_check):
            return
        self.storage.dispose()
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self._settings = settings
        common = {"lease_seconds": settings.lease_seconds, "timeout": settings.busy_timeout,
                  "caps": settings.caps, "long_cap": settings.long_job_cap, **settings.roles,
                  "create_tables": migrate}
        if settings.database_url:
            self.storage_class = LeasedPostgresStorage
            self.storage_kwargs = {"url": settings.database_url, **common}
        else:
            self.storage_class = LeasedSqliteStorage
            self.storage_kwargs = {"filename": str(settings.queue_db), **common}
        self.serializer = signing.KeySerializer(secret=settings.secret_key, salt="qrq")
        self.key_replaced = False
        try:
            self.storage = self.create_storage()
            if key_check:
                signing.check_key(self.storage, self.serializer)
            self._key_checked = key_check
        except BaseException:
            self.storage.dispose()
            self._settings, self.storage = None, NoStorage()  # a later init tries again
            raise
        self.storage.synchronous = settings.enqueue_sync
        self.storage.ended_hook = self.jobs_ended  # ends written after a batch waited
        for task_class, spec in self._declared:
            self._apply_limits(task_class, spec)

    def init_or_exit(self, settings: Settings) -> None:
        """:meth:`init` for a process that is starting (web app, consumer): a queue
        database that cannot be opened (unreachable, refused, newer than this qrq)
        ends the process with one line instead of a traceback."""
        try:
            self.init(settings)
        except QrqError as exc:
            raise SystemExit(f"Error: {exc.message}") from None

    def declare(self, task_class: type, spec: TaskSpec) -> None:
        """Remember *spec* for a registered task class; its limits apply at :meth:`init`."""
        self._declared.append((task_class, spec))
        if self._settings is not None:
            self._apply_limits(task_class, spec)

    @property
    def declared_job_types(self) -> set[str]:
        """The job types of the tasks declared in this process (qrq's own and those of
        ``QRQ_TASK_MODULES``, once a consumer has imported them)."""
        return {spec.job_type for _, spec in self._declared if spec.job_type}

    def _apply_limits(self, task_class: type, spec: TaskSpec) -> None:
        limits = spec.limits(self._settings)
        task_class.default_timeout = limits["timeout"]
        task_class.default_retries = limits["retries"]
        task_class.default_retry_delay = limits["retry_delay"]
        task_class.default_expires = limits["expires"]

    def create_consumer(self, **options):
        return QrqConsumer(self, **options)

    # -- enqueue ------------------------------------------------------------------------

    def enqueue(self, task, job: dict[str, Any] | None = None,
                admission: Admission | None = None):
        """Enqueue *task* with its job record, in one transaction; return the job id
        (an earlier job's, when *admission*'s idempotency key was seen).

        Tasks given an eta in the future go straight to the schedule. Groups,
        chords, immediate mode and tasks without a job type are left to huey.
        """
        job_type = getattr(task, "job_type", None)
        if self.immediate or job_type is None:
            return super().enqueue(task)
        self.key_watch.check(self.storage, self.serializer)
        if task.expires:
            task.resolve_expires(self.utc)
        self.emit(S.SIGNAL_ENQUEUED, task)
        if job is None:
            job = jobs.new_record(task.id, job_type, task.name, None)
        eta = task.eta if task.eta and task.eta > self.now() else None
        return self.storage.enqueue(self.serialize_task(task), task.priority, job_id=task.id,
                                    job=job, job_type=job_type, eta=eta, admission=admission)

    def enqueue_by_name(self, name: str, args: tuple, kwargs: dict, *, owner_id: int | None,
                        params: dict[str, Any] | None = None,
                        admission: Admission | None = None,
                        spec: TaskSpec | None = None) -> str:
        """Enqueue a call of qrq task *name* (:data:`catalog.TASKS`, or *spec*'s: a
        periodic task run now) without its module. Options in *kwargs* as for huey's
        ``task.s()``: ``id``, ``eta``, ``delay``, ``priority``, ``expires``, ``timeout``,
        ``retries``, ``retry_delay``; what is not given is filled in by the task class.
        """
        spec = spec or catalog.task_spec(name)
        kwargs = dict(kwargs)
        options = {key: kwargs.pop(key, None) for key in (
            "id", "eta", "delay", "priority", "expires", "timeout", "retries", "retry_delay")}
        eta, delay = options.pop("eta"), options.pop("delay")
        if eta is not None or delay is not None:
            eta = normalize_time(eta, delay, self.utc)
        job_id = options.pop("id") or str(uuid.uuid4())
        if options["priority"] is None:
            options["priority"] = spec.effective_priority
        if options["expires"] is None:
            options["expires"] = spec.limits(self.settings)["expires"]
        message = huey_private.message(f"{MODULE}.{name}", tuple(args), kwargs, id=job_id,
                                       eta=eta, utc=self.utc, **options)
        job = jobs.new_record(job_id, spec.job_type, name, owner_id, params)
        self.key_watch.check(self.storage, self.serializer)
        return self.storage.enqueue(
            self.serializer.serialize(message), message.priority, job_id=job_id, job=job,
            job_type=spec.job_type, eta=eta if eta and eta > self.now() else None,
            admission=admission)

    def read_periodic(self, timestamp):
        """The periodic tasks due at *timestamp*, once per minute slot however many
        schedulers run: a run's id is its task's name and slot (a record inserted on
        conflict do nothing queues it); a task without a job record claims its slot."""
        slot = (timestamp or self.now()).replace(second=0, microsecond=0).isoformat()
        due = []
        for task in super().read_periodic(timestamp):
            task.id = str(uuid.uuid5(PERIODIC_SLOTS, f"{task.name}@{slot}"))
            try:
                if getattr(task, "job_type", None) is not None \
                        or self.storage.claim_slot(task.name, slot):
                    due.append(task)
            except Unavailable:  # this minute's run is lost either way; the scheduler
                # lives on (raising here ended its process, the reason unlogged)
                logger.warning("periodic task %s not queued", task.name, exc_info=True)
        return due

    def scheduled(self, limit=None):
        """The tasks waiting in the schedule, readable in a process that has not
        imported the task modules (the web app): unknown names get a stand-in class."""
        found = []
        for data in self.storage.scheduled_items(limit):
            try:
                message = self.serializer.deserialize(data)
            except Exception:
                logger.exception("unreadable schedule entry")
                continue
            found.append(self.task_from_message(message))
        return found

    # -- run ------------------------------------------------------------------------------

    def dequeue(self):
        if self.key_replaced:
            return None
        data = self.storage.dequeue()
        if data is None:
            return None
        try:
            return self.deserialize_task(data)
        except Exception as exc:
            # A row not signed with our secret is never unpickled.
            job_id = self.storage.leased_job_id
            if signing.refusal(self.storage, self.serializer) is not None:
                # Our key is no longer the queue's: the row is most likely signed with
                # the new one. It goes back for a consumer that has that key.
                logger.error("giving job %s back: this process's secret key was replaced "
                             "(qrq key adopt); it takes no more jobs", job_id)
                self.key_replaced = True
                self.storage.release(job_id)
                return None
            logger.error("refused queue row for job %s: %s", job_id, exc)
            self.jobs_ended(self.storage.complete(
                job_id, {"status": "failed", "error": "refused: payload signature mismatch"}))
            return None

    def execute(self, task, timestamp=None):
        state = self._state
        state.outcome, state.requeued = None, False
        try:
            return super().execute(task, timestamp)
        finally:
            if state.outcome == _RELEASE and not state.requeued:
                self.storage.release(task.id)
            elif not state.requeued:
                # No outcome means huey's own machinery failed around the task:
                # end the job visibly rather than leave it "running".
                self.jobs_ended(self.storage.complete(task.id, state.outcome or {
                    "status": "failed", "error": "internal error: the run left no outcome"},
                    lease_next=True))

    def before_run(self, task) -> None:
        if self.stopping:
            # Leased as this worker's consumer died, before it was in flight: huey
            # handles this as a stop signal, and the job is given back (_on_interrupted).
            raise KeyboardInterrupt

    def _record_outcome(self, task, value, exc) -> None:
        if exc is None:
            if value is not None and not isinstance(value, dict):
                value = {"value": value}
            self._state.outcome = {"status": "finished", "result": value}
        elif task.retries:
            self._state.error = jobs.describe_error(exc)  # the requeue records it
        else:
            self._state.outcome = {**jobs.describe_error(exc),
                                   "status": "canceled" if isinstance(exc, jobs.JobCanceled)
                                   else "failed"}

    def _on_expired(self, task, *args) -> None:
        self._state.outcome = {"status": "expired", "error": "expired: not started in time"}

    def _on_revoked(self, task, *args) -> None:
        self._state.outcome = {"status": "canceled", "error": "canceled"}

    def _on_interrupted(self, task, *args) -> None:
        self._state.outcome = _RELEASE

    def requeue_for_retry(self, task, timestamp, retry_eta=None) -> None:
        """Schedule the next attempt of a failed task (huey's retry hook calls this)."""
        task.retries -= 1
        if retry_eta is None:
            # Up to 50% random extra on the exponential backoff spreads a burst of retries.
            delay = task.retry_delay * (1 + random.random() * 0.5)
            if task.retry_backoff:
                task.retry_delay *= task.retry_backoff
            retry_eta = timestamp + datetime.timedelta(seconds=delay)
        task.eta = retry_eta
        wait = max(0.0, (retry_eta - timestamp).total_seconds())
        error = getattr(self._state, "error", None) or {}
        logger.info("retrying %s in %.1fs, %s retries left", task.id, wait, task.retries)
        self.storage.reschedule(self.serialize_task(task), retry_eta, task.id,
                                {**error, "status": "retrying",
                                 "next_attempt_at": time.time() + wait},
                                getattr(task, "job_type", None), task.priority)
        self._state.requeued = True

    def add_schedule(self, task):
        if self.storage.leased_job_id is None:
            return super().add_schedule(task)
        # A leased task that is not due yet: swap its row for a schedule entry.
        eta = task.eta or datetime.datetime.fromtimestamp(0)
        wait = max(0.0, (eta - self.now()).total_seconds())
        self.storage.reschedule(self.serialize_task(task), eta, task.id,
                                {"status": "queued", "next_attempt_at": time.time() + wait},
                                getattr(task, "job_type", None), task.priority)
        self._state.requeued = True

    # -- control ------------------------------------------------------------------------

    def retry(self, job_id: str) -> None:
        """Run a failed, canceled or expired job again, under the same id, in any process.
        :raises: as :meth:`retry_entry` says; Conflict if it changed state meanwhile."""
        entry = self.retry_entry(job_id, jobs.get(self.storage, job_id))
        if not self.storage.enqueue_retries([entry])[0]:
            raise Conflict(f"job {job_id} changed state; try again")

    def retry_entry(self, job_id: str, job: dict[str, Any] | None) -> tuple:
        """What :meth:`retry` queues for *job_id* (record *job*): ``(data, priority, job
        id, type)`` for the storage's ``enqueue_retries``, which queues many at once. The
        payload is re-signed, not re-built from its task class. :raises NotFound: no such
        job. :raises Conflict: the job has not ended badly, it predates stored payloads,
        or its stored payload cannot be read (signed with another secret, e.g. after a
        secret rotation, or damaged). :raises Unavailable: the queue's key was replaced
        since this process started (:class:`signing.KeyWatch`)."""
        if job is None:
            raise NotFound(f"job {job_id} not found")
        self.key_watch.check(self.storage, self.serializer)
        # A fresh start: the task's own retries, a new expiry window, no pending eta.
        message = huey_private.fresh_attempt(self.stored_message(job), self.utc)
        return self.serializer.serialize(message), message.priority, job_id, job["type"]

    def stored_message(self, job: dict[str, Any]):
        """The message *job* (a job record) was queued with, to run it again.
        :raises Conflict: as :meth:`retry_entry` says."""
        job_id = job["id"]
        if job["status"] not in ("failed", "canceled", "expired"):
            raise Conflict(f"job {job_id} is {job['status']}; only failed, canceled or "
                           "expired jobs can be retried")
        payload = jobs.stored_payload(self.storage, job_id)
        if payload is None:
            raise Conflict(f"job {job_id} has no stored payload to re-run")
        try:
            return self.serializer.deserialize(payload)
        except Exception as exc:
            reason = ("its signature does not match this installation's secret (was "
                      "QRQ_SECRET_KEY or secret.key changed?)"
                      if "signature" in str(exc).lower() else f"it cannot be read ({exc})")
            raise Conflict(f"job {job_id} cannot be retried: {reason}") from None

    def cancel(self, job_id: str) -> str:
        """Cancel a job: at once while it waits, at its next progress call while it runs.

        Returns the job's status afterwards.
        """
        ended = self.storage.cancel_queued(job_id)
        if ended is not None:
            self.job_ended(ended)
        else:
            job_progress.flag_cancel(self.storage, job_id)
        return jobs.get(self.storage, job_id)["status"]

