"""Restore a backup set into a directory: check everything first, then replace.

Every database is decompressed next to its target and checked like a
verification (sha256, ``integrity_check``, row counts) before any target is
touched; only when all are sound (and the key the restored queue needs is
there, see :mod:`qrq.backup.secret`) are they renamed into place. A damaged set
thus restores nothing, never half.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

from qrq.backup import files, postgres, secret
from qrq.backup.archive import unpack_entry
from qrq.backup.sets import DamagedBackup, select_entries
from qrq.errors import QrqError

QUEUE_DB = "queue.db"


def _staging(target: Path) -> Path:
    return target.with_name(f".{target.name}.restore-{uuid.uuid4().hex[:8]}")


def restore(backups: Path, manifest: dict, to_dir: Path, names: Iterable[str] = (), *,
            env_key: str | None = None, database_url: str = "",
            before_replacing: Callable[[], None] = lambda: None,
            report: Callable[[dict, str], None] = lambda entry, stage: None) -> list[Path]:
    """Restore databases of a set into *to_dir*; return the paths written (the
    databases, then ``secret.key`` when it came too).

    With ``queue.db`` the key that verifies its payloads comes too (or must be
    *env_key*, the ``QRQ_SECRET_KEY`` the restored system runs with). Each
    database is staged next to its target and checked (*report* gets
    ``(entry, "checked")``); then *before_replacing* runs (the CLI takes its safety
    backup there), and the targets' ``-wal`` and ``-shm`` are removed (an old WAL
    applied to the restored file would corrupt it) and the staged files renamed
    over them (``(entry, "restored")``). Files and directories made are private.

    A PostgreSQL dump (qrq's tables when ``QRQ_DATABASE_URL`` is set) is checked by a
    restore into a scratch database on *database_url*'s server, then restored into
    *database_url* itself in one transaction, before any file is replaced.

    :raises DamagedBackup: a file of the set is missing or damaged; nothing was
        replaced. :raises WrongKey: the restored queue could not be verified.
        :raises InsufficientSpace: the staged copies would not fit.
    """
    entries = select_entries(manifest, names)
    dumps = [e for e in entries if e["codec"] == postgres.CODEC]
    entries = [e for e in entries if e["codec"] != postgres.CODEC]
    set_dir = backups / manifest["id"]
    if dumps and not database_url:
        raise QrqError(f"set {manifest['id']} holds a PostgreSQL dump: set QRQ_DATABASE_URL "
                       "to the database to restore it into (or leave it out with --db)")
    key = None
    if any(e["name"] in (QUEUE_DB, postgres.NAME) for e in [*entries, *dumps]):
        key = secret.key_to_restore(manifest, set_dir, env_key)
    files.check_space(to_dir, sum(e.get("size", 0) for e in entries) + files.MARGIN,
                      "the restore")
    staged: list[tuple[Path, Path]] = []
    try:
        for entry in dumps:
            problems = postgres.verify_entry(set_dir, entry, database_url)
            if problems:
                raise DamagedBackup(f"backup set {manifest['id']} is damaged: "
                                    f"{'; '.join(problems)}; nothing was restored")
            report(entry, "checked")
        for entry in entries:
            target = to_dir / entry["name"]
            try:
                files.make_dirs(target.parent)
                staged.append((_staging(target), target))
                problems = unpack_entry(set_dir, entry, staged[-1][0])
                if not problems:
                    files.fsync(staged[-1][0])
            except OSError as exc:  # the target side: permissions, a full disk
                raise _unwritable(exc, target, "nothing was restored") from None
            if problems:
                detail = "; ".join(problems).replace("\n", " ")
                raise DamagedBackup(f"backup set {manifest['id']} is damaged: {detail}; "
                                    "nothing was restored")
            report(entry, "checked")
        if key is not None:
            target = to_dir / secret.SECRET_FILE
            staged.append((_staging(target), target))
            try:
                files.make_dirs(to_dir)  # with only a PostgreSQL dump, nothing made it yet
                secret.write_key(key, staged[-1][0])
            except OSError as exc:
                raise _unwritable(exc, target, "nothing was restored") from None
        before_replacing()
        for entry in dumps:  # one transaction each: if it fails, nothing was replaced
            postgres.restore(database_url, set_dir / entry["file"], entry["schema"])
        for done, (tmp, target) in enumerate(staged):
            try:
                for suffix in ("-wal", "-shm", "-journal"):
                    Path(f"{target}{suffix}").unlink(missing_ok=True)
                os.replace(tmp, target)
            except OSError as exc:
                raise _unwritable(exc, target, f"{done} of {len(staged)} files were "
                                  "replaced; restore again") from None
        for folder in {target.parent for _, target in staged}:
            files.fsync(folder)
    finally:
        for tmp, _ in staged:
            files.discard(tmp)
    for entry in [*dumps, *entries]:
        report(entry, "restored")
    return [target for _, target in staged]


def _unwritable(exc: OSError, target: Path, outcome: str) -> QrqError:
    return QrqError(f"cannot write {exc.filename or target}: {exc.strerror or exc}; {outcome}")
