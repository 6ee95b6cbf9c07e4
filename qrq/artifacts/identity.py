"""Whether this host's artifact store is the one the other hosts use.

Job outputs are written on the host that runs the job and downloaded from any web
host, so every host must name the same store (``QRQ_ARTIFACT_STORE``: one S3 bucket and
prefix, or one shared mount). A host that names another (a web host left on its local
``<data>/artifacts``) writes outputs no other host finds, or looks where nothing was
written, and each download is a 404.

With PostgreSQL, where hosts can be several, the first process to start writes a marker
object, :data:`MARKER`, holding a random id into its store and records the id in the
queue database (``artifact_store``, one row). Each process that starts later reads the
marker in its own store: missing or another id, it logs an error saying so. (A store
moved on purpose keeps the marker when its files are copied along, as the README says.)
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

from qrq.artifacts import open_store
from qrq.artifacts.store import ArtifactStore
from qrq.config import Settings
from qrq.errors import StoreUnavailable
from qrq.queue import first_record

logger = logging.getLogger("qrq.artifacts")

MARKER = "qrq-store-id"  # never a job's output: those start with the job's id


def check_shared(storage, store: ArtifactStore) -> str | None:
    """Why *store* is not the one the queue's other hosts use (None: it is, or it is
    the first). A store out of reach is not judged here: its own checks report it."""
    try:
        mine = _read_marker(store)
        shared = _recorded(storage)
        if shared is None:
            if mine is None:
                mine = secrets.token_hex(16)
                with store.write(MARKER) as tmp:
                    tmp.write_text(mine)
            # A host starting at the same time may have recorded its store first.
            shared = first_record.write(storage, "artifact_store",
                                        {"store_id": mine, "location": store.location})
    except (StoreUnavailable, OSError):  # out of reach, or full: reported elsewhere
        return None
    if mine == shared["store_id"]:
        return None
    return (f"this host's artifact store ({store.location}) is not the one the other hosts "
            f"use ({shared['location']}, first used by {first_record.by_whom(shared)}; its "
            f"{MARKER} is {'missing' if mine is None else 'another'} here): "
            "outputs written on one cannot be downloaded from the other. Give every host "
            "the same QRQ_ARTIFACT_STORE (an S3 bucket and prefix, or one shared mount)")


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


def _recorded(storage) -> dict[str, Any] | None:
    return first_record.read(storage, "artifact_store", ("store_id", "location"))
