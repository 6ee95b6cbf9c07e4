"""A backup run: every database into a new set, side by side, never half written.

A run is written under ``.partial-<id>`` and renamed into place only once its
manifest is written, so a crash never leaves a half set that looks finished.

A database whose snapshot has the same sha256 as in its last good backup is not
compressed and verified again: that verified file is hard-linked into the new
set (copied where links fail) after its own sha256 is checked, and the entry says
"reused from set <id>". Retention then deletes a set's directory without harming
the sets that share its files.
"""

from __future__ import annotations

import concurrent.futures
import datetime
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from qrq.backup import files, postgres, secret, selection
from qrq.backup.archive import (
    CODECS,
    Stopped,
    compress_file,
    connect,
    count_rows,
    hash_file,
    never,
    snapshot,
    verify_entry,
)
from qrq.backup.files import MARGIN, InsufficientSpace
from qrq.backup.sets import MANIFEST, usable_sets
from qrq.errors import QrqError

PARTIAL = ".partial-"


def _reuse_unchanged(previous: tuple[Path, dict] | None, entry: dict, out: Path,
                     state: dict | None) -> bool:
    """Reuse the previous verified file without a snapshot when the source's files
    have the very state they had, settled, when that file was made; True when it did."""
    if previous is None or state is None or previous[1].get("source_state") != state:
        return False
    old = previous[1]
    candidate = {**entry, "db_sha256": old["db_sha256"]}
    if not _reuse(previous, candidate, out):
        return False
    entry.update(candidate, size=old["size"], tables=old["tables"], source_state=state,
                 note=f"{candidate['note']}: unchanged since (same size and mtime)")
    return True


def _reuse(previous: tuple[Path, dict] | None, entry: dict, out: Path) -> bool:
    """Link (or copy) the previous set's verified file for this database into *out*
    when its snapshot is byte for byte the same; True when it did.

    The file's sha256 is checked again here, so a file damaged since is not
    carried forward: the database is then compressed and verified afresh.
    """
    if previous is None:
        return False
    set_dir, old = previous
    source = set_dir / old["file"]
    if (old.get("db_sha256") != entry["db_sha256"] or old.get("codec") != entry["codec"]
            or not source.is_file()):
        return False
    try:
        os.link(source, out)  # one copy on disk, however many sets hold it
        os.chmod(out, files.FILE_MODE)  # a file from a set made before sets were private
    except OSError:
        out.unlink(missing_ok=True)
        files.copy(source, out)
    if hash_file(out) != old["sha256"]:
        out.unlink()
        return False
    entry.update(sha256=old["sha256"], compressed_size=old["compressed_size"],
                 reused_from=set_dir.name, note=f"reused from set {set_dir.name}")
    return True


def backup_database(name: str, src: Path, set_dir: Path, codec: str,
                    stop: Callable[[], bool] = never,
                    timeout: float = 10.0,
                    previous: tuple[Path, dict] | None = None) -> dict[str, Any]:
    """Snapshot, compress and verify one database into *set_dir*; never raises for
    a bad database: the entry says ``failed`` with the error, and keeps no file.

    *previous* is ``(set directory, manifest entry)`` of this database's last
    good backup: when the snapshot's sha256 equals that entry's, the verified
    file is reused instead of being compressed and verified again. When the
    source's files have not changed at all since that backup (the same size,
    inode and mtime, which had then been settled for
    :data:`qrq.backup.selection.SETTLED_NS`), not even the snapshot is taken: this
    is the quick check backup tools such as restic and rsync make, and most
    analytics databases are unchanged from one night to the next.
    """
    started = time.monotonic()
    entry: dict[str, Any] = {"name": name, "source": str(src), "file": name + CODECS[codec],
                             "codec": codec, "status": "failed", "error": None}
    out = set_dir / entry["file"]
    snap = set_dir / f".snap-{uuid.uuid4().hex}.db"
    try:
        needed = 2 * selection.source_bytes(src) + MARGIN
        free = shutil.disk_usage(set_dir).free
        if free < needed:
            raise InsufficientSpace(f"{name}: needs about {needed >> 20} MiB free, "
                                    f"{free >> 20} MiB left")
        files.make_dirs(out.parent)
        started_ns, state = time.time_ns(), selection.source_state(src)  # before the snapshot
        if _reuse_unchanged(previous, entry, out, state):
            entry["status"] = "ok"
            return entry
        if selection.settled(state, started_ns):
            entry["source_state"] = state  # what the next run compares with
        snapshot(src, snap, timeout)
        conn = connect(snap, readonly=True)
        try:
            entry["tables"] = count_rows(conn)
        finally:
            conn.close()
        entry["size"] = snap.stat().st_size
        entry["db_sha256"] = hash_file(snap, stop)
        if not _reuse(previous, entry, out):
            entry.update(compress_file(snap, out, codec, stop))
            files.discard(snap)  # before the restore, so two copies are never on disk at once
            problems = verify_entry(set_dir, entry, set_dir, stop)
            if problems:
                raise RuntimeError("verification failed: " + "; ".join(problems))
        entry["status"] = "ok"
    except Stopped:
        raise
    except Exception as exc:
        entry["error"] = str(exc) if isinstance(exc, QrqError) else f"{type(exc).__name__}: {exc}"
        out.unlink(missing_ok=True)  # a file that failed is never kept as good
    finally:
        files.discard(snap)
        entry["duration"] = round(time.monotonic() - started, 3)
    return entry


def _new_set_id(backups: Path, now: datetime.datetime) -> str:
    base = now.strftime("%Y%m%dT%H%M%SZ")
    set_id, n = base, 1
    while (backups / set_id).exists() or (backups / f"{PARTIAL}{set_id}").exists():
        n += 1
        set_id = f"{base}-{n}"
    return set_id


def estimate_space(backups: Path, sizes: Iterable[int], threads: int) -> int:
    """Bytes a run needs: the compressed files (at the last run's ratio, or 1:1 without
    one, plus 10%) and the temporary snapshot and restore of each database in flight."""
    sizes = sorted(sizes, reverse=True)
    ratio = 1.0
    for manifest in usable_sets(backups):
        raw = sum(e.get("size", 0) for e in manifest["databases"] if e["status"] == "ok")
        packed = sum(e.get("compressed_size", 0) for e in manifest["databases"]
                     if e["status"] == "ok")
        if raw:
            ratio = min(1.0, packed / raw * 1.1)
            break
    return int(sum(sizes) * ratio + 2 * sum(sizes[:threads]) + MARGIN)


def _last_good_entries(backups: Path) -> dict[str, tuple[Path, dict]]:
    """Per database name, its newest good entry in the finished sets, with that set's
    directory."""
    found: dict[str, tuple[Path, dict]] = {}
    for manifest in usable_sets(backups):
        for entry in manifest["databases"]:
            if entry["status"] == "ok":
                found.setdefault(entry["name"], (backups / manifest["id"], entry))
    return found


def _prepare(backups: Path) -> None:
    """Create the backups directory (private), and remove runs that died.

    :raises UnusableDirectory: a file is where it belongs, or it cannot be written: a
        mistake to correct (the job is not retried), not a passing fault.
    """
    files.check_directory(backups, "the backup directory (QRQ_BACKUP_DIR)")
    files.make_dirs(backups)
    if backups.stat().st_mode & 0o077:
        os.chmod(backups, files.DIR_MODE)  # made before backups were private
    for stale in backups.glob(f"{PARTIAL}*"):
        shutil.rmtree(stale, ignore_errors=True)


def run_backup(settings, kind: str = "manual", *,
               report: Callable[[float, str], None] = lambda pct, stage: None,
               stop: Callable[[], bool] = never,
               now: datetime.datetime | None = None,
               restoring: str | None = None) -> dict[str, Any]:
    """Back up every database, and the key that signs the queue, into a new set;
    return its manifest. A ``safety`` set names the set whose restore it precedes
    (*restoring*): retention keeps that one as long as the safety set.

    The caller holds the backup lock. One failing database never stops the others.
    :raises InsufficientSpace: the set would not fit; nothing was written.
    """
    backups = settings.backups_dir
    _prepare(backups)
    dbs = selection.list_databases(settings)
    sizes = {name: selection.source_bytes(path) if path.exists() else 0 for name, path in dbs}
    if settings.database_url:  # the queue and app tables: one dump of their schema
        sizes[postgres.NAME] = postgres.size(settings.database_url)
    threads = max(1, settings.backup_threads)
    files.check_space(backups, estimate_space(backups, sizes.values(), threads), "backup")
    now = now or datetime.datetime.now(datetime.UTC)
    set_id = _new_set_id(backups, now)
    report(0, f"backing up {len(sizes)} databases")
    partial = backups / f"{PARTIAL}{set_id}"
    files.make_dirs(partial)
    started = time.monotonic()
    total = sum(sizes.values()) or 1
    done_bytes, entries = 0, []
    halt = threading.Event()

    def stopping() -> bool:
        return halt.is_set() or stop()

    previous = _last_good_entries(backups)
    pool = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="qrq-backup")
    try:
        # Largest first, so one big database does not run alone at the end.
        futures = {pool.submit(backup_database, name, path, partial, settings.backup_codec,
                               stopping, settings.busy_timeout, previous.get(name)): name
                   for name, path in sorted(dbs, key=lambda d: -sizes[d[0]])}
        if settings.database_url:
            futures[pool.submit(postgres.backup_entry, settings.database_url, partial,
                                stopping)] = postgres.NAME
        for future in concurrent.futures.as_completed(futures):
            entries.append(future.result())
            done_bytes += sizes[futures[future]]
            report(95 * done_bytes / total,
                   f"backed up {len(entries)}/{len(futures)} databases")
        key = secret.save(settings, partial)
    except BaseException:
        halt.set()
        pool.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(partial, ignore_errors=True)
        raise
    pool.shutdown(wait=True)
    # Every file reaches the disk before the manifest says it is there. Not one
    # fsync per file as it is written: on ext4 each fsync commits the journal, which
    # can also write out the other thread's temporary snapshot and restore (files
    # deleted moments later). Measured: equal on a quiet machine, 20-36% faster
    # here when other processes were writing too (BENCHMARKS.md).
    for entry in entries:
        if entry["status"] == "ok":
            files.fsync(partial / entry["file"])
    for folder in {(partial / e["file"]).parent for e in entries} | {partial}:
        files.fsync(folder)
    entries.sort(key=lambda e: e["name"])
    ok = sum(e["status"] == "ok" for e in entries)
    manifest = {
        "id": set_id, "kind": kind, "codec": settings.backup_codec,
        "created_at": now.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "status": "ok" if ok == len(entries) else "partial" if ok else "failed",
        "ok": ok, "failed": len(entries) - ok,
        "reused": sum(bool(e.get("reused_from")) for e in entries),
        "size": sum(e.get("size", 0) for e in entries),
        "compressed_size": sum(e.get("compressed_size", 0) for e in entries
                               if e["status"] == "ok"),
        "duration": round(time.monotonic() - started, 3),
        "secret": key,
        **({"restoring": restoring} if restoring else {}),
        "databases": entries,
    }
    files.write_json(partial / MANIFEST, manifest)
    os.rename(partial, backups / set_id)
    files.fsync(backups)
    report(100, "done")
    return manifest
