"""Backups of every SQLite database qrq knows: snapshot, compress, verify, restore, retain.

A backup *set* is one run: ``<backups>/<set id>/manifest.json`` and one compressed
file per database. Each database is copied with SQLite's online backup API (one
step, so one read transaction: a consistent snapshot while writers go on, never
a plain copy of a live file), compressed with zstd, then decompressed into a
temporary file and checked (``PRAGMA integrity_check``, sha256, row counts) before
the set counts it as good. A run is written under ``.partial-<id>`` and renamed
into place only once its manifest is written, so a crash never leaves a half
set that looks finished.

A database whose snapshot has the same sha256 as in its last good backup is not
compressed and verified again: that verified file is hard-linked into the new
set (copied where links fail) after its own sha256 is checked, and the entry says
"reused from set <id>". Retention then deletes a set's directory without harming
the sets that share its files.

zstd level 1 because it compresses SQLite pages ~7x faster than gzip -1 at a
better ratio (see BENCHMARKS.md); gzip stays available (``QRQ_BACKUP_CODEC``).
"""

from __future__ import annotations

import concurrent.futures
import datetime
import hashlib
import json
import os
import shutil
import sqlite3
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

from qrq.errors import NotFound, QrqError, ValidationError
from qrq.sqlite_deadline import interrupt_when

CODECS = {"zstd": ".zst", "gzip": ".gz"}
CHUNK = 1 << 20
ZSTD_LEVEL = 1
MARGIN = 16 << 20  # free space kept beyond the estimate
MANIFEST = "manifest.json"
PARTIAL = ".partial-"


class InsufficientSpace(QrqError):
    """Not enough free disk space for the backup."""

    status = 507
    code = "insufficient_storage"


class Stopped(Exception):
    """The run was asked to stop (canceled or out of time)."""


# -- what to back up -----------------------------------------------------------------

def list_databases(settings) -> list[tuple[str, Path]]:
    """Every SQLite database qrq knows, as ``(name, path)``: app.db, queue.db and the
    analytics databases (``QRQ_ANALYTICS_DBS``: a directory or a glob, by default
    ``<data>/analytics/*.db``).

    Names are paths relative to the data directory, so a restore into a directory
    lays the files out as the data directory has them.
    """
    from qrq.analytics import find_databases

    dbs = [("app.db", settings.app_db), ("queue.db", settings.queue_db)]
    seen = {settings.app_db.resolve(), settings.queue_db.resolve()}
    location = getattr(settings, "analytics_dbs", "analytics")
    for path in find_databases(location, settings.data_dir):
        if not path.is_file() or path.name.endswith(("-wal", "-shm", "-journal")) \
                or path.resolve() in seen:
            continue
        seen.add(path.resolve())
        try:
            name = path.resolve().relative_to(settings.data_dir.resolve()).as_posix()
        except ValueError:
            name = f"analytics/{path.name}"
        dbs.append((name, path))
    return dbs


# A file last modified this long before the backup started cannot have been written
# since without its mtime changing (file times come from a clock that ticks every
# few milliseconds; this leaves a wide margin).
SETTLED_NS = 2_000_000_000


def source_state(path: Path) -> dict[str, list[int] | None] | None:
    """``[device, inode, size, mtime]`` of the database file and of its WAL (None
    when absent or empty: an empty WAL holds nothing, and a read-only connection,
    such as a snapshot's, leaves one behind): SQLite changes at least one of them
    with every write. Not the ctime: SQLite running as root chowns the WAL each
    time it opens it, even to read.

    None when a rollback journal is left over: the file's bytes alone are then not
    the database.
    """
    journal = Path(f"{path}-journal")
    if journal.exists() and journal.stat().st_size:
        return None
    state: dict[str, list[int] | None] = {}
    for key, part in (("db", path), ("wal", Path(f"{path}-wal"))):
        try:
            st = os.stat(part)
        except FileNotFoundError:
            st = None
        state[key] = [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns] \
            if st is not None and (st.st_size or key == "db") else None
    return state


def _settled(state: dict | None, started_ns: int) -> bool:
    return state is not None and all(part is None or part[3] < started_ns - SETTLED_NS
                                     for part in state.values())


def _source_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())


# -- one database ---------------------------------------------------------------------

def _connect(path: Path, readonly: bool = False, timeout: float = 10.0) -> sqlite3.Connection:
    mode = "ro" if readonly else "rw"
    return sqlite3.connect(f"file:{path}?mode={mode}", uri=True, timeout=timeout,
                           check_same_thread=False)


def snapshot(src: Path, dest: Path, timeout: float = 10.0) -> None:
    """Copy the database at *src* into a new file *dest* with the online backup API.

    ``pages=-1`` copies every page in one step, inside one read transaction, so
    the copy is the database as of one commit even while other connections write.
    """
    if not src.is_file():
        raise FileNotFoundError(f"{src} does not exist")
    source = _connect(src, readonly=True, timeout=timeout)
    target = sqlite3.connect(dest)
    try:
        target.execute("pragma journal_mode=off")
        target.execute("pragma synchronous=off")
        source.backup(target, pages=-1)
    finally:
        target.close()
        source.close()


def count_rows(conn: sqlite3.Connection) -> dict[str, int]:
    """Rows per table (virtual tables are skipped: their module may be absent)."""
    tables = [name for name, sql in conn.execute(
        "select name, sql from sqlite_master where type = 'table' order by name")
        if not (sql or "").lower().startswith("create virtual")]
    quoted = {t: '"' + t.replace('"', '""') + '"' for t in tables}
    return {t: conn.execute(f"select count(*) from {quoted[t]}").fetchone()[0] for t in tables}


def _compressor(codec: str):
    if codec == "zstd":
        import zstandard

        # The frame checksum (xxh64 of the content) makes every decompression check
        # that it returned exactly the bytes that were compressed.
        return zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True).compressobj()
    if codec == "gzip":
        return zlib.compressobj(1, zlib.DEFLATED, 31)  # gzip's trailer carries a crc32
    raise ValidationError(f"unknown codec {codec!r}; use one of {', '.join(CODECS)}")


def _decompressor(codec: str):
    if codec == "zstd":
        import zstandard

        return zstandard.ZstdDecompressor().decompressobj()
    if codec == "gzip":
        return zlib.decompressobj(31)
    raise ValidationError(f"unknown codec {codec!r}")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _chunks(path: Path, stop: Callable[[], bool]) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            if stop():
                raise Stopped("stopped")
            yield chunk


def hash_file(path: Path, stop: Callable[[], bool] = lambda: False) -> str:
    """The sha256 of a file, hex."""
    digest = hashlib.sha256()
    for chunk in _chunks(path, stop):
        digest.update(chunk)
    return digest.hexdigest()


def compress_file(src: Path, dest: Path, codec: str,
                  stop: Callable[[], bool] = lambda: False) -> dict[str, Any]:
    """Compress *src* into *dest*; return the sha256 and size of *dest*.

    *dest* is not fsynced here: :func:`run_backup` syncs every file at the end.
    """
    digest, packer, packed = hashlib.sha256(), _compressor(codec), 0
    with open(dest, "wb") as fout:
        for chunk in _chunks(src, stop):
            out = packer.compress(chunk)
            digest.update(out)
            packed += fout.write(out)
        out = packer.flush()
        digest.update(out)
        packed += fout.write(out)
    return {"sha256": digest.hexdigest(), "compressed_size": packed}


def decompress_file(src: Path, dest: Path, codec: str,
                    stop: Callable[[], bool] = lambda: False) -> str:
    """Decompress *src* into *dest*; return the sha256 of *dest*.

    A damaged *src* raises (zstd and gzip check their own checksums) or yields
    bytes whose sha256 differs from the manifest's, which the callers compare.
    """
    digest, unpacker = hashlib.sha256(), _decompressor(codec)
    with open(dest, "wb") as fout:
        for chunk in _chunks(src, stop):
            out = unpacker.decompress(chunk)
            digest.update(out)
            fout.write(out)
        if codec == "gzip":
            rest = unpacker.flush()
            digest.update(rest)
            fout.write(rest)
        if not unpacker.eof:
            raise ValueError(f"{src.name} is truncated")
    return digest.hexdigest()


def check_database(path: Path, expected_rows: dict[str, int] | None,
                   stop: Callable[[], bool] = lambda: False) -> list[str]:
    """Problems found by ``integrity_check`` and the row counts; empty when sound."""
    with closing(_connect(path)) as conn, interrupt_when(conn, stop, every=100_000):
        # A big page cache and mmap make integrity_check's index lookups cheap.
        conn.execute("pragma cache_size=-262144")
        conn.execute("pragma mmap_size=1073741824")
        rows = [r[0] for r in conn.execute("pragma integrity_check")]
        problems = [] if rows == ["ok"] else [f"integrity_check: {'; '.join(rows[:5])}"]
        if expected_rows is not None and not problems:
            counts = count_rows(conn)
            if counts != expected_rows:
                problems.append(f"row counts differ: expected {expected_rows}, got {counts}")
        return problems


def _discard(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def verify_entry(set_dir: Path, entry: dict, work_dir: Path,
                 stop: Callable[[], bool] = lambda: False) -> list[str]:
    """Restore one backed-up database into a temporary file in *work_dir* and check it
    against its manifest entry; return the problems (empty: good).

    The restored file must have the snapshot's sha256, so it is byte for byte
    the database that was backed up (which also proves the compressed file
    sound: a second hash of it would add nothing); then ``integrity_check`` and
    the row counts run on the restored file itself.
    """
    packed = set_dir / entry["file"]
    if not packed.is_file():
        return [f"{entry['file']} is missing"]
    tmp = work_dir / f".verify-{uuid.uuid4().hex}.db"
    try:
        if decompress_file(packed, tmp, entry["codec"], stop) != entry["db_sha256"]:
            return [f"{entry['name']}: the restored database's sha256 does not match "
                    "the manifest"]
        return check_database(tmp, entry["tables"], stop)
    except Stopped:
        raise
    except Exception as exc:
        if stop():
            raise Stopped("stopped") from None
        return [f"{entry['file']}: {type(exc).__name__}: {exc}"]
    finally:
        _discard(tmp)


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
    except OSError:
        shutil.copyfile(source, out)
    if hash_file(out) != old["sha256"]:
        out.unlink()
        return False
    entry.update(sha256=old["sha256"], compressed_size=old["compressed_size"],
                 reused_from=set_dir.name, note=f"reused from set {set_dir.name}")
    return True


def backup_database(name: str, src: Path, set_dir: Path, codec: str,
                    stop: Callable[[], bool] = lambda: False,
                    timeout: float = 10.0,
                    previous: tuple[Path, dict] | None = None) -> dict[str, Any]:
    """Snapshot, compress and verify one database into *set_dir*; never raises for
    a bad database: the entry says ``failed`` with the error, and keeps no file.

    *previous* is ``(set directory, manifest entry)`` of this database's last
    good backup: when the snapshot's sha256 equals that entry's, the verified
    file is reused instead of being compressed and verified again. When the
    source's files have not changed at all since that backup (the same size,
    inode and mtime, which had then been settled for :data:`SETTLED_NS`), not even
    the snapshot is taken: this is the quick check backup tools such as restic
    and rsync make, and most analytics databases are unchanged from one night to
    the next.
    """
    started = time.monotonic()
    entry: dict[str, Any] = {"name": name, "source": str(src), "file": name + CODECS[codec],
                             "codec": codec, "status": "failed", "error": None}
    out = set_dir / entry["file"]
    snap = set_dir / f".snap-{uuid.uuid4().hex}.db"
    try:
        needed = 2 * _source_bytes(src) + MARGIN
        free = shutil.disk_usage(set_dir).free
        if free < needed:
            raise InsufficientSpace(f"{name}: needs about {needed >> 20} MiB free, "
                                    f"{free >> 20} MiB left")
        out.parent.mkdir(parents=True, exist_ok=True)
        started_ns, state = time.time_ns(), source_state(src)  # before the snapshot
        if _reuse_unchanged(previous, entry, out, state):
            entry["status"] = "ok"
            return entry
        if _settled(state, started_ns):
            entry["source_state"] = state  # what the next run compares with
        snapshot(src, snap, timeout)
        conn = _connect(snap, readonly=True)
        try:
            entry["tables"] = count_rows(conn)
        finally:
            conn.close()
        entry["size"] = snap.stat().st_size
        entry["db_sha256"] = hash_file(snap, stop)
        if not _reuse(previous, entry, out):
            entry.update(compress_file(snap, out, codec, stop))
            _discard(snap)  # before the restore, so two copies are never on disk at once
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
        _discard(snap)
        entry["duration"] = round(time.monotonic() - started, 3)
    return entry


# -- a run ----------------------------------------------------------------------------

def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as fh:
        json.dump(data, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


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
    previous = list_sets(backups)
    for manifest in previous:
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
    for manifest in list_sets(backups):
        for entry in manifest["databases"]:
            if entry["status"] == "ok":
                found.setdefault(entry["name"], (backups / manifest["id"], entry))
    return found


def run_backup(settings, kind: str = "manual", *,
               report: Callable[[float, str], None] = lambda pct, stage: None,
               stop: Callable[[], bool] = lambda: False,
               now: datetime.datetime | None = None) -> dict[str, Any]:
    """Back up every database into a new set; return its manifest.

    The caller holds the backup lock. One failing database never stops the others.
    :raises InsufficientSpace: the set would not fit; nothing was written.
    """
    backups = settings.backups_dir
    backups.mkdir(parents=True, exist_ok=True)
    for stale in backups.glob(f"{PARTIAL}*"):  # left by a run that died
        shutil.rmtree(stale, ignore_errors=True)
    dbs = list_databases(settings)
    sizes = {name: _source_bytes(path) if path.exists() else 0 for name, path in dbs}
    threads = max(1, settings.backup_threads)
    needed = estimate_space(backups, sizes.values(), threads)
    free = shutil.disk_usage(backups).free
    if free < needed:
        raise InsufficientSpace(f"backup needs about {needed >> 20} MiB free in {backups}, "
                                f"only {free >> 20} MiB left; nothing was written")
    now = now or datetime.datetime.now(datetime.UTC)
    set_id = _new_set_id(backups, now)
    report(0, f"backing up {len(dbs)} databases")
    partial = backups / f"{PARTIAL}{set_id}"
    partial.mkdir()
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
        for future in concurrent.futures.as_completed(futures):
            entries.append(future.result())
            done_bytes += sizes[futures[future]]
            report(95 * done_bytes / total, f"backed up {len(entries)}/{len(dbs)} databases")
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
            _fsync(partial / entry["file"])
    for folder in {(partial / e["file"]).parent for e in entries}:
        _fsync(folder)
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
        "databases": entries,
    }
    _write_json(partial / MANIFEST, manifest)
    os.rename(partial, backups / set_id)
    _fsync(backups)
    report(100, "done")
    return manifest


# -- sets -------------------------------------------------------------------------------

def list_sets(backups: Path) -> list[dict[str, Any]]:
    """The manifests of the finished sets, newest first (partial runs are not sets)."""
    manifests = []
    if backups.is_dir():
        for path in backups.iterdir():
            if path.name.startswith(".") or not (path / MANIFEST).is_file():
                continue
            try:
                manifests.append(json.loads((path / MANIFEST).read_text()))
            except (OSError, ValueError):
                continue
    return sorted(manifests, key=lambda m: (m["created_at"], m["id"]), reverse=True)


def get_set(backups: Path, set_id: str) -> dict[str, Any]:
    """A set's manifest by id; ``latest`` is the newest set with a good database.

    :raises NotFound: no such set.
    """
    sets = list_sets(backups)
    if set_id == "latest":
        good = [m for m in sets if m["ok"]]
        if not good:
            raise NotFound(f"no backup with a good database in {backups}")
        return good[0]
    for manifest in sets:
        if manifest["id"] == set_id:
            return manifest
    raise NotFound(f"no backup set {set_id!r} in {backups}")


def select_entries(manifest: dict, names: Iterable[str] = ()) -> list[dict]:
    """The manifest's good entries named by *names* (a name, or its file stem); all
    good entries when *names* is empty.

    :raises ValidationError: a name matches no database, or more than one.
    """
    good = [e for e in manifest["databases"] if e["status"] == "ok"]
    names = list(names)
    if not names:
        return good
    chosen = []
    for wanted in names:
        matches = [e for e in manifest["databases"]
                   if wanted in (e["name"], Path(e["name"]).stem)]
        if len(matches) != 1:
            known = ", ".join(e["name"] for e in manifest["databases"][:20])
            raise ValidationError(f"{wanted!r} matches {len(matches)} databases in set "
                                  f"{manifest['id']} (names: {known}...)", field="db")
        if matches[0]["status"] != "ok":
            raise ValidationError(f"{wanted!r} failed in set {manifest['id']}: "
                                  f"{matches[0]['error']}", field="db")
        chosen.append(matches[0])
    return chosen


def verify_set(backups: Path, manifest: dict, *,
               report: Callable[[dict, list[str]], None] = lambda entry, problems: None
               ) -> dict[str, list[str]]:
    """Check every good database of a set again; return ``{name: problems}``."""
    set_dir = backups / manifest["id"]
    results = {}
    for entry in select_entries(manifest):
        results[entry["name"]] = verify_entry(set_dir, entry, set_dir)
        report(entry, results[entry["name"]])
    return results


def restore(backups: Path, manifest: dict, to_dir: Path, names: Iterable[str] = (), *,
            report: Callable[[dict], None] = lambda entry: None) -> list[Path]:
    """Restore databases of a set into *to_dir*, each checked before it replaces anything.

    Each file is decompressed next to its target, checked like a verification,
    then the target's ``-wal`` and ``-shm`` are removed (an old WAL applied to the
    restored file would corrupt it) and the file renamed over the target.
    :raises QrqError: a database failed its check; the ones before it are restored.
    """
    entries = select_entries(manifest, names)
    set_dir = backups / manifest["id"]
    restored = []
    for entry in entries:
        target = to_dir / entry["name"]
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.restore-{uuid.uuid4().hex[:8]}")
        try:
            raw_sha = decompress_file(set_dir / entry["file"], tmp, entry["codec"])
            problems = [] if raw_sha == entry["db_sha256"] \
                else ["sha256 does not match the manifest"]
            problems = problems or check_database(tmp, entry["tables"])
            if problems:
                raise QrqError(f"{entry['name']} not restored: {'; '.join(problems)}")
            _fsync(tmp)
            for suffix in ("-wal", "-shm", "-journal"):
                Path(f"{target}{suffix}").unlink(missing_ok=True)
            os.replace(tmp, target)
        finally:
            _discard(tmp)
        restored.append(target)
        report(entry)
    return restored


# -- retention --------------------------------------------------------------------------

def plan_retention(sets: Iterable[dict], daily: int, weekly: int, monthly: int,
                   tz: datetime.tzinfo = datetime.UTC) -> tuple[list[str], list[str]]:
    """Which sets to keep and which to delete; a pure function of the manifests.

    Among sets with a good database, the newest of each of the last *daily* days,
    *weekly* ISO weeks and *monthly* months (in *tz*) are kept. The newest fully
    good set is always kept, and so are the ``safety`` sets (taken before a restore
    over the live data) within the daily window. Sets with no good database are
    kept only while they are younger than the oldest daily set kept, so a failure
    stays visible.
    Returns ``(keep, delete)`` as id lists, newest first.
    """
    def when(m: dict) -> datetime.datetime:
        moment = datetime.datetime.fromisoformat(m["created_at"].replace("Z", "+00:00"))
        return moment.astimezone(tz)

    ordered = sorted(sets, key=lambda m: (m["created_at"], m["id"]), reverse=True)
    usable = [m for m in ordered if m["ok"]]
    keep: set[str] = set()
    buckets = ((daily, lambda d: d.date()), (weekly, lambda d: d.isocalendar()[:2]),
               (monthly, lambda d: (d.year, d.month)))
    kept_daily: list[datetime.datetime] = []
    for rule, (count, bucket) in enumerate(buckets):
        seen: set = set()
        for manifest in usable:
            key = bucket(when(manifest))
            if key in seen:
                continue
            if len(seen) >= count:
                break
            seen.add(key)
            keep.add(manifest["id"])
            if rule == 0:
                kept_daily.append(when(manifest))
    # The newest fully good set, and the newest set with any good database, always stay.
    for group in ([m for m in ordered if m["status"] == "ok"], usable):
        if group:
            keep.add(group[0]["id"])
    failed = [m for m in ordered if not m["ok"]]
    if kept_daily:
        keep.update(m["id"] for m in failed if when(m) >= kept_daily[-1])
        # A safety set holds what a restore over the live data replaced: it stays for
        # the daily window even when a later set of the same day is that day's one.
        keep.update(m["id"] for m in usable
                    if m.get("kind") == "safety" and when(m) >= kept_daily[-1])
    elif usable:
        keep.update(m["id"] for m in failed if when(m) >= when(usable[0]))
    else:
        keep.update(m["id"] for m in failed[:max(daily, 1)])
    return ([m["id"] for m in ordered if m["id"] in keep],
            [m["id"] for m in ordered if m["id"] not in keep])


def apply_retention(settings, tz: datetime.tzinfo = datetime.UTC) -> list[str]:
    """Delete the sets :func:`plan_retention` does not keep; return their ids."""
    backups = settings.backups_dir
    _, delete = plan_retention(list_sets(backups), settings.backup_keep_daily,
                               settings.backup_keep_weekly, settings.backup_keep_monthly, tz)
    for set_id in delete:
        shutil.rmtree(backups / set_id, ignore_errors=True)
    return delete
