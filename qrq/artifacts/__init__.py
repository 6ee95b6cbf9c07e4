"""Where job outputs (PDFs, ZIPs) are kept: a directory or S3-compatible object storage.

Every write, read, listing and deletion of an artifact goes through the one
:class:`ArtifactStore` that ``QRQ_ARTIFACT_STORE`` selects: :func:`open_store` gives
this process's. ``store`` says what a store does, ``directory`` and ``s3`` are the two
kinds.
"""

from __future__ import annotations

import os
import threading

from qrq.artifacts.directory import DirectoryStore
from qrq.artifacts.store import ArtifactInfo, ArtifactStore, check_name, logger
from qrq.config import Settings
from qrq.config.settings import s3_location
from qrq.errors import StoreUnavailable

__all__ = ["ArtifactInfo", "ArtifactStore", "DirectoryStore", "StoreUnavailable",
           "check_name", "open_store", "store_or_exit"]

_stores: dict[tuple, ArtifactStore] = {}
_lock = threading.Lock()


def open_store(settings: Settings) -> ArtifactStore:
    """The artifact store *settings* select, built once per process (an S3 client is
    costly to make, and not to be shared with a forked worker)."""
    key = (os.getpid(), settings.artifact_store, settings.s3_endpoint_url,
           settings.artifacts_dir)
    store = _stores.get(key)
    if store is None:
        with _lock:
            store = _stores.get(key)
            if store is None:
                if len(_stores) > 16:  # settings changed (tests): drop the old ones
                    _stores.clear()
                store = _stores[key] = _build(settings)
    return store


def _build(settings: Settings) -> ArtifactStore:
    location = s3_location(settings.artifact_store)
    if location is None:
        return DirectoryStore(settings.artifacts_dir, create=not settings.artifact_store)
    # boto3 is optional (the s3 extra) and takes a third of a second to import: only a
    # process with an S3 store pays for it.
    from qrq.artifacts.s3 import S3Store
    bucket, prefix = location
    return S3Store(bucket, prefix, staging=settings.artifacts_dir,
                   endpoint_url=settings.s3_endpoint_url)


def store_or_exit(settings: Settings) -> ArtifactStore:
    """:func:`open_store` for a consumer that is starting: a missing or unreachable store
    ends it with one line instead of jobs that fail one by one."""
    store = open_store(settings)
    # Not logged as well: before the consumer sets up its logging, that would print the
    # same line twice.
    quiet, logger.disabled = logger.disabled, True
    try:
        store.check()
    except StoreUnavailable as exc:
        raise SystemExit(f"Error: {exc}") from None
    finally:
        logger.disabled = quiet
    return store
