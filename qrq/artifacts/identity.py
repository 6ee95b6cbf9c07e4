"""Whether this host's artifact store is the one the other hosts use.

Job outputs are written on the host that runs the job and downloaded from any web
host, so every host must name the same store (``QRQ_ARTIFACT_STORE``: one S3 bucket and
prefix, or one shared mount). A host that names another (a web host left on its local
``<data>/artifacts``) writes outputs no other host finds, or looks where nothing was
written, and each download is a 404.

With PostgreSQL, where hosts can be several, the database decides: the first process
to start records a random id in the queue database (``artifact_store``, one row; the
first record wins) and only then writes it into its store as the marker object
:data:`MARKER`, so hosts starting together never leave the store's marker and the
database's id apart. A process that finds the marker missing while the record is new
waits a moment for the recorder's write. Missing after that, or holding an id the
database did not record, its store is another one (or the marker was lost) and it logs
an error saying so; it never writes the marker itself, which would make a wrong store
look right. (A store moved on purpose keeps the marker when its files are copied along,
as the README says.)
"""

from __future__ import annotations

import logging
import secrets
import time
from typing import Any

from qrq.artifacts import open_store
from qrq.artifacts.store import ArtifactStore
from qrq.config import Settings
from qrq.errors import StoreUnavailable
from qrq.queue import first_record

logger = logging.getLogger("qrq.artifacts")

MARKER = "qrq-store-id"  # never a job's output: those start with the job's id
# How long after the record a process waits for the marker the recorder writes next.
_MARKER_WRITE_SECONDS = 5


def check_shared(storage, store: ArtifactStore) -> str | None:
    """Why *store* is not the one the queue's other hosts use (None: it is, or it is
    the first). A store out of reach is not judged here: its own checks report it."""
    try:
        mine = _read_marker(store)  # first: a store out of reach records nothing
        shared = _recorded(storage)
        if shared is None:
            # A store with a marker but a fresh database (the database recreated) keeps it.
            proposed = mine or secrets.token_hex(16)
            shared = first_record.write(storage, "artifact_store",
                                        {"store_id": proposed, "location": store.location})
            if mine is None and shared["store_id"] == proposed:
                _write_marker(storage, store, proposed)
                mine = proposed
        if mine is None:
            mine = _await_marker(store, shared["recorded_at"])
    except (StoreUnavailable, OSError):  # out of reach, or full: reported elsewhere
        return None
    if mine == shared["store_id"]:
        return None
    return _mismatch(store, shared, mine)


def warn_if_not_shared(storage, settings: Settings) -> None:
    """On PostgreSQL (where hosts can be several), log :func:`check_shared`'s reason for
    *settings*' store, if any, as an error. It only warns: an error while checking is
    logged too, and the process starts anyway."""
    if not settings.database_url:
        return
    try:
        reason = check_shared(storage, open_store(settings))
    except Exception:
        logger.exception("could not tell whether the artifact store is the shared one")
        return
    if reason:
        logger.error("%s", reason)


def _read_marker(store: ArtifactStore) -> str | None:
    try:
        reader, _ = store.open(MARKER)
    except FileNotFoundError:
        return None
    with reader:
        return reader.read(200).decode("ascii", "replace").strip()


def _write_marker(storage, store: ArtifactStore, store_id: str) -> None:
    """Write the id this process recorded into its store; if that fails, withdraw the
    record, so that no host is judged against a marker no store holds."""
    try:
        with store.write(MARKER) as tmp:
            tmp.write_text(store_id)
    except BaseException:
        first_record.withdraw(storage, "artifact_store", "store_id", store_id)
        raise


def _await_marker(store: ArtifactStore, recorded_at: float) -> str | None:
    """The marker once it is there, if the record is new enough that the process which
    made it may still be writing the marker (None: it did not come)."""
    deadline = min(recorded_at, time.time()) + _MARKER_WRITE_SECONDS
    while True:
        mine = _read_marker(store)
        if mine is not None or time.time() >= deadline:
            return mine
        time.sleep(0.2)


def _mismatch(store: ArtifactStore, shared: dict[str, Any], mine: str | None) -> str:
    """The error for a marker that is missing or not the recorded one."""
    if store.location != shared["location"]:
        found = "missing" if mine is None else "another"
        return (f"this host's artifact store ({store.location}) is not the one the other "
                f"hosts use ({shared['location']}, first used by "
                f"{first_record.by_whom(shared)}; its {MARKER} is {found} here): outputs "
                "written on one cannot be downloaded from the other. Give every host the "
                "same QRQ_ARTIFACT_STORE (an S3 bucket and prefix, or one shared mount)")
    # The same name can be another store: a local directory on another host, or a bucket
    # of that name on another S3 endpoint.
    held = "is missing" if mine is None else f"holds {mine[:40]}"
    return (f"this host's artifact store ({store.location}) has the name of the one the "
            f"other hosts use, but its {MARKER} {held}, not the id the database recorded "
            f"({shared['store_id']}, first used by {first_record.by_whom(shared)}). If it "
            "is another store under that name (a local directory on another host, or "
            "another S3 endpoint), outputs written on one cannot be downloaded from the "
            "other: give every host the same store. If it is the same store, write "
            f"{shared['store_id']} into {store.describe(MARKER)}")


def _recorded(storage) -> dict[str, Any] | None:
    return first_record.read(storage, "artifact_store", ("store_id", "location"))
