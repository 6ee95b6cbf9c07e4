"""One database's copy: snapshot, compress, decompress and check.

Each database is copied with SQLite's online backup API (one step, so one read
transaction: a consistent snapshot while writers go on, never a plain copy of a
live file), compressed with zstd, then decompressed into a temporary file and
checked (``PRAGMA integrity_check``, sha256, row counts): a restore is the same
decompress-and-check, kept instead of deleted.

zstd level 1 because it compresses SQLite pages ~7x faster than gzip -1 at a
better ratio (see BENCHMARKS.md); gzip stays available (``QRQ_BACKUP_CODEC``).
"""

from __future__ import annotations

import hashlib
import sqlite3
import uuid
import zlib
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import zstandard

from qrq.backup import files
from qrq.errors import ValidationError
from qrq.sqlite_deadline import interrupt_when

CODECS = {"zstd": ".zst", "gzip": ".gz"}
CHUNK = 1 << 20
ZSTD_LEVEL = 1


class Stopped(Exception):
    """The run was asked to stop (canceled or out of time)."""


def never() -> bool:
    return False


def connect(path: Path, readonly: bool = False, timeout: float = 10.0) -> sqlite3.Connection:
    mode = "ro" if readonly else "rw"
    return sqlite3.connect(f"file:{path}?mode={mode}", uri=True, timeout=timeout,
                           check_same_thread=False)


def snapshot(src: Path, dest: Path, timeout: float = 10.0) -> None:
    """Copy the database at *src* into a new private file *dest* with the online backup API.

    ``pages=-1`` copies every page in one step, inside one read transaction, so
    the copy is the database as of one commit even while other connections write.
    """
    if not src.is_file():
        raise FileNotFoundError(f"{src} does not exist")
    files.create(dest).close()  # SQLite takes an empty file as a new database, keeping its mode
    source = connect(src, readonly=True, timeout=timeout)
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
        # The frame checksum (xxh64 of the content) makes every decompression check
        # that it returned exactly the bytes that were compressed.
        return zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True).compressobj()
    if codec == "gzip":
        return zlib.compressobj(1, zlib.DEFLATED, 31)  # gzip's trailer carries a crc32
    raise ValidationError(f"unknown codec {codec!r}; use one of {', '.join(CODECS)}")


def _decompressor(codec: str):
    if codec == "zstd":
        return zstandard.ZstdDecompressor().decompressobj()
    if codec == "gzip":
        return zlib.decompressobj(31)
    raise ValidationError(f"unknown codec {codec!r}")


def _chunks(path: Path, stop: Callable[[], bool]) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            if stop():
                raise Stopped("stopped")
            yield chunk


def hash_file(path: Path, stop: Callable[[], bool] = never) -> str:
    """The sha256 of a file, hex."""
    digest = hashlib.sha256()
    for chunk in _chunks(path, stop):
        digest.update(chunk)
    return digest.hexdigest()


def compress_file(src: Path, dest: Path, codec: str,
                  stop: Callable[[], bool] = never) -> dict[str, Any]:
    """Compress *src* into a private file *dest*; return the sha256 and size of *dest*.

    *dest* is not fsynced here: :func:`qrq.backup.runs.run_backup` syncs every file
    at the end.
    """
    digest, packer, packed = hashlib.sha256(), _compressor(codec), 0
    with files.create(dest) as fout:
        for chunk in _chunks(src, stop):
            out = packer.compress(chunk)
            digest.update(out)
            packed += fout.write(out)
        out = packer.flush()
        digest.update(out)
        packed += fout.write(out)
    return {"sha256": digest.hexdigest(), "compressed_size": packed}


def decompress_file(src: Path, dest: Path, codec: str,
                    stop: Callable[[], bool] = never) -> str:
    """Decompress *src* into a private file *dest*; return the sha256 of *dest*.

    A damaged *src* raises (zstd and gzip check their own checksums) or yields
    bytes whose sha256 differs from the manifest's, which the callers compare.
    """
    digest, unpacker = hashlib.sha256(), _decompressor(codec)
    with files.create(dest) as fout:
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
                   stop: Callable[[], bool] = never) -> list[str]:
    """Problems found by ``integrity_check`` and the row counts; empty when sound."""
    with closing(connect(path)) as conn, interrupt_when(conn, stop, every=100_000):
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


def unpack_entry(set_dir: Path, entry: dict, dest: Path,
                 stop: Callable[[], bool] = never) -> list[str]:
    """Decompress one backed-up database into *dest* and check it against its manifest
    entry; return the problems, each naming the file (empty: good).

    The restored file must have the snapshot's sha256, so it is byte for byte
    the database that was backed up (which also proves the compressed file
    sound: a second hash of it would add nothing); then ``integrity_check`` and
    the row counts run on the restored file itself.
    """
    packed = set_dir / entry["file"]
    if not packed.is_file():
        return [f"{entry['file']} is missing"]
    try:
        if decompress_file(packed, dest, entry["codec"], stop) != entry["db_sha256"]:
            return [f"{entry['file']}: the restored database's sha256 does not match "
                    "the manifest"]
        return [f"{entry['file']}: {problem}"
                for problem in check_database(dest, entry["tables"], stop)]
    except Stopped:
        raise
    except Exception as exc:
        if stop():
            raise Stopped("stopped") from None
        return [f"{entry['file']} is damaged: {type(exc).__name__}: {exc}"]


def verify_entry(set_dir: Path, entry: dict, work_dir: Path,
                 stop: Callable[[], bool] = never) -> list[str]:
    """Restore one backed-up database into a temporary file in *work_dir*, check it
    (:func:`unpack_entry`) and delete it; return the problems (empty: good)."""
    tmp = work_dir / f".verify-{uuid.uuid4().hex}.db"
    try:
        return unpack_entry(set_dir, entry, tmp, stop)
    finally:
        files.discard(tmp)
