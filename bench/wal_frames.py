"""Which b-trees a SQLite WAL's frames belong to, read from the frames themselves.

A commit writes each page it changed, whole, to the WAL. A page's owner cannot be looked
up afterwards (a drain frees pages and others reuse them), so each frame is classified
by its own bytes: its kind (table or index, leaf or interior, freelist or overflow) and,
for a leaf, the shape of its first cell's record (the storage class of each column:
null, integer, real, text, blob), matched against the declared types of the database's
tables and indexes (an index's records end with the rowid; an integer primary key is
stored as null). Shapes that fit several b-trees name them all.

Run: ``python bench/wal_frames.py DB JOBS`` with the WAL (``DB-wal``) kept, e.g. by
``pragma wal_autocheckpoint = 0`` and a connection left open (bench/drain.py's profile
does this itself).
"""

from __future__ import annotations

import collections
import sqlite3
import struct
import sys
from pathlib import Path

_LEAVES = {13: "table", 10: "index"}
_INTERIORS = {5: "table interior", 2: "index interior"}


def _varint(data: bytes, i: int) -> tuple[int, int]:
    value = 0
    for k in range(8):
        byte = data[i + k]
        value = (value << 7) | (byte & 0x7F)
        if byte < 0x80:
            return value, i + k + 1
    return (value << 8) | data[i + 8], i + 9


def _storage_class(serial_type: int) -> str:
    if serial_type == 0:
        return "n"
    if serial_type == 7:
        return "r"
    if serial_type >= 12:
        return "b" if serial_type % 2 == 0 else "t"
    return "i"


def _classes(page: bytes, cell: int, table: bool) -> str:
    """The storage classes of the record of the cell at offset *cell*, e.g. ``"ntbi"``."""
    _, i = _varint(page, cell)  # payload size
    if table:
        _, i = _varint(page, i)  # rowid
    header, j = _varint(page, i)
    classes = ""
    while j < i + header:
        serial_type, j = _varint(page, j)
        classes += _storage_class(serial_type)
    return classes


def shape(page: bytes, pgno: int) -> str:
    """What a WAL frame of page *pgno* holds: ``table ntbi``/``index tri`` (a leaf: its
    kind and its first record's storage classes), an interior page, page 1, or
    freelist/overflow."""
    if pgno == 1:
        return "page 1 (header, schema)"
    kind = page[0]
    if kind in _INTERIORS:
        return _INTERIORS[kind]
    if kind not in _LEAVES:
        return "freelist or overflow"
    cells = struct.unpack(">H", page[3:5])[0]
    if cells == 0:
        return f"{_LEAVES[kind]} (empty leaf)"
    first = struct.unpack(">H", page[8:10])[0]
    return f"{_LEAVES[kind]} {_classes(page, first, kind == 13)}"


def _allowed(declared: str, integer_key: bool) -> str:
    """The storage classes a column of *declared* type can hold on disk."""
    if integer_key:
        return "n"  # the rowid itself
    declared = declared.lower()
    if "int" in declared:
        return "ni"
    if "real" in declared or "floa" in declared or "doub" in declared:
        return "nir"  # a whole REAL is stored as an integer
    if "char" in declared or "text" in declared or "clob" in declared:
        return "nt"
    return "nirtb"


def btree_columns(db: Path) -> dict[str, tuple[str, list[str]]]:
    """``{name: (kind, [allowed storage classes per record column])}`` of *db*'s tables
    and indexes."""
    found = {}
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        for kind, name, table in conn.execute(
                "select type, name, tbl_name from sqlite_master where type in "
                "('table', 'index') and name not like 'sqlite_%'"):
            info = {row[1]: (row[2], row[5] == 1 and row[2].lower() == "integer")
                    for row in conn.execute(f"pragma table_info({table})")}
            if kind == "table":
                found[name] = (kind, [_allowed(*info[c]) for c in info])
            else:
                columns = [row[2] for row in conn.execute(f"pragma index_info({name})")]
                found[name] = (kind, [_allowed(info[c][0], False) for c in columns] + ["i"])
    finally:
        conn.close()
    return found


def names_of(key: str, btrees: dict[str, tuple[str, list[str]]]) -> str:
    """The b-trees whose records can have the shape *key* (``index tri``), or *key*."""
    kind, _, classes = key.partition(" ")
    if kind not in _LEAVES.values() or not classes or "(" in classes:
        return key
    fits = sorted(name for name, (btree_kind, allowed) in btrees.items()
                  if btree_kind == kind and len(allowed) == len(classes)
                  and all(c in a for c, a in zip(classes, allowed, strict=True)))
    return "/".join(fits) or key


def frames_by_shape(wal: Path) -> tuple[collections.Counter, int]:
    """``(frames per shape, commits)`` of the WAL file *wal*."""
    data = wal.read_bytes()
    page_size = struct.unpack(">I", data[8:12])[0]
    counts: collections.Counter = collections.Counter()
    commits, offset = 0, 32
    while offset + 24 + page_size <= len(data):
        pgno, db_size_after_commit = struct.unpack(">II", data[offset:offset + 8])
        counts[shape(data[offset + 24:offset + 24 + page_size], pgno)] += 1
        commits += db_size_after_commit > 0
        offset += 24 + page_size
    return counts, commits


def pages_per_job(db: Path, jobs: int) -> dict[str, float]:
    """WAL frames per job by b-tree (or page kind), most first, for *db*'s WAL."""
    counts, _ = frames_by_shape(Path(f"{db}-wal"))
    btrees = btree_columns(db)
    named: collections.Counter = collections.Counter()
    for key, count in counts.items():
        named[names_of(key, btrees)] += count
    return {key: round(count / jobs, 2) for key, count in named.most_common()}


if __name__ == "__main__":
    for where, per_job in pages_per_job(Path(sys.argv[1]), int(sys.argv[2])).items():
        print(f"{per_job:6.2f}  {where}")
