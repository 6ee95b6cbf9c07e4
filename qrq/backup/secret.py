"""The key that verifies the queue's payloads, carried by each backup set.

Queue payloads are pickles signed with the qrq secret, and a consumer refuses a
payload whose signature does not match: a ``queue.db`` restored without its key
can neither run its jobs nor retry the failed ones. So each set carries the
data directory's ``secret.key`` (0600, in a 0700 set) and records the key's
fingerprint in its manifest; a restore of ``queue.db`` puts the key back beside
it. Whoever can read a set can therefore sign payloads (and dashboard sessions):
keep backups as private as the data directory itself.

A key given by ``QRQ_SECRET_KEY`` lives outside the data directory on purpose
and is never written to disk by qrq: the set records only its fingerprint, and
a restore refuses unless that key is in effect.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from qrq.backup import files
from qrq.backup.sets import DamagedBackup
from qrq.queue.signing import WrongKey, fingerprint

SECRET_FILE = "secret.key"
NOTE = ("secret.key signs queue payloads and dashboard sessions: whoever can read this "
        "set can forge both; keep it as private as the data directory")


def environment_key(settings) -> str | None:
    """The key in effect when it comes from ``QRQ_SECRET_KEY`` rather than from the data
    directory's ``secret.key``; None when it comes from that file."""
    try:
        stored = settings.secret_file.read_text().strip()
    except FileNotFoundError:
        return settings.secret_key
    return None if stored == settings.secret_key else settings.secret_key


def save(settings, set_dir: Path) -> dict[str, Any]:
    """Put the key into the set (unless it comes from the environment); return the
    manifest's ``secret`` entry."""
    info: dict[str, Any] = {"fingerprint": fingerprint(settings.secret_key)}
    if environment_key(settings) is None:
        write_key(settings.secret_key, set_dir / SECRET_FILE)
        info.update(file=SECRET_FILE, source="secret.key", note=NOTE)
    else:
        info.update(file=None, source="QRQ_SECRET_KEY",
                    note="the key came from QRQ_SECRET_KEY and is not in this set; a "
                         "restore of the queue (queue.db, or the PostgreSQL dump) needs "
                         "that key set again")
    return info


def key_to_restore(manifest: dict, set_dir: Path, env_key: str | None) -> str | None:
    """Check that a restored ``queue.db`` will verify with the key the restored system
    will use; return the set's key when the restore must write it to ``secret.key``.

    *env_key* is the ``QRQ_SECRET_KEY`` the restored system runs with (None: it reads
    ``<data>/secret.key``). Sets made before keys were carried have no ``secret``
    entry and are not checked.

    :raises WrongKey: the key that will be in effect is not the set's.
    :raises DamagedBackup: the set's key file is missing or does not match its
        fingerprint.
    """
    info = manifest.get("secret")
    if info is None:
        return None
    set_id, wanted = manifest["id"], info["fingerprint"]
    if env_key is not None:
        if fingerprint(env_key) != wanted:
            instead = " (or unset it: the set carries its secret.key)" if info.get("file") \
                else ""
            raise WrongKey(f"QRQ_SECRET_KEY is not the key that signed the queue in set "
                           f"{set_id} (fingerprint {wanted}); set it to that key{instead} "
                           "and run the restore again; nothing was restored")
        return None
    if not info.get("file"):
        raise WrongKey(f"the queue in set {set_id} was signed with a key given by "
                       f"QRQ_SECRET_KEY (fingerprint {wanted}), which backups do not hold; "
                       "set QRQ_SECRET_KEY to that key here and for the restored system, "
                       "and run the restore again; nothing was restored")
    where = f"{set_id}/{info['file']}"
    try:
        key = (set_dir / info["file"]).read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise DamagedBackup(f"{where} cannot be read ({exc}); nothing was restored") \
            from None
    if fingerprint(key) != wanted:
        raise DamagedBackup(f"{where} is damaged: its fingerprint does not match the "
                            "manifest; nothing was restored")
    return key


def write_key(key: str, path: Path) -> None:
    """Write *key* durably into a new private file *path*."""
    with files.create(path) as fh:
        fh.write(key.encode() + b"\n")
        fh.flush()
        os.fsync(fh.fileno())
