"""The ``scans_time`` index of a scan database read straight from the file's pages:
the time and the visitor hash of every scan in some ranges, as numpy arrays.

Handing each hash out of SQLite costs more than reading the index: ``group_concat``
adds ~39 ns a scan to a plain ``count``, and this Python's ``sqlite3`` loads no
extension that could do better. The index's pages are bytes in a documented, stable
format (https://www.sqlite.org/fileformat2.html, "B-tree Pages"), and numpy takes
every entry out of them in less time than SQLite needs to count them.

It reads only what SQLite would return, or nothing (None, and the caller asks SQLite):

* Only inside the connection's read transaction, and only when the file alone holds
  that transaction's snapshot: no WAL beside it, or an empty one, or one whose every
  frame is copied into the file (a checkpoint never copies frames newer than a
  reader's snapshot into the file while it reads, so the file stays as it is; without
  a WAL, the transaction's shared lock keeps writers out). The WAL and its index are
  the ones beside the file SQLite opened (links resolved), the index only if this
  process may write it (else SQLite does not use it either), and the file's header
  must say what the snapshot says (page count, schema and free-list counters), and
  SQLite must find the same first and last entries in the ranges.
* Only the index of qrq's schema (:data:`qrq.analytics.scans.SCHEMA`), and only if every
  page and entry it meets is exactly what that index makes: any other page type, a page
  number out of range, an entry of another shape or keys out of order, and it gives up.

POSIX record locks belong to a process and a file: closing any descriptor of a file
drops every lock the process holds on it, SQLite's too. So :class:`DatabaseFile` opens
the file before its connection, and its descriptors are closed once no
:class:`DatabaseFile` of this process is open. Nothing else in a process that runs
reports should hold connections to the scan databases (qrq reads them only here).

The walk of the index skips the subtrees that lie outside the ranges; the entries are
decoded a million at a time (~37 bytes a scan while decoding), and only those in the
ranges are kept (16 bytes a scan, as arrays).
"""

from __future__ import annotations

import mmap
import os
import stat
import struct
import threading
from pathlib import Path
from typing import Any

INDEX_SQL = "createindexscans_timeonscans(scanned_at,visitor_hash)"  # lower case, no spaces
_MAGIC = b"SQLite format 3\x00"
_INTERIOR, _LEAF = 0x02, 0x0A
_SHM_HEADER = 136  # two copies of the WAL index header (48 bytes each), then nBackfill
_CHUNK = 1 << 20  # entries decoded at once

_lock = threading.Lock()
_reading = 0  # DatabaseFile contexts open in this process
_to_close: list[Any] = []  # their maps and descriptors, closed when none is open


class DatabaseFile:
    """A scan database's file, opened before its connection and closed after it (and
    after every other :class:`DatabaseFile` of this process), for
    :func:`read_time_hashes`."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.fd: int | None = None
        self.shm_fd: int | None = None
        self.map: mmap.mmap | None = None
        self.special = False  # a FIFO, a device: not a database, and SQLite would wait

    def __enter__(self) -> DatabaseFile:
        global _reading
        with _lock:
            _reading += 1
        try:  # without waiting for a writer, should the path be a FIFO
            self.fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError:
            return self  # SQLite says what is wrong with it
        mode = os.fstat(self.fd).st_mode
        if not stat.S_ISREG(mode):
            self.special = not stat.S_ISDIR(mode)
            with _lock:  # (another thread's exit may be taking the list)
                _to_close.append(self.fd)
            self.fd = None
        return self

    def __exit__(self, *exc_info: object) -> None:
        global _reading
        with _lock:
            _reading -= 1
            # A map holds a descriptor of its own.
            _to_close.extend(x for x in (self.map, self.fd, self.shm_fd) if x is not None)
            self.map = self.fd = self.shm_fd = None
            if _reading == 0:
                pending, _to_close[:] = _to_close[:], []
                for item in pending:
                    if isinstance(item, int):
                        os.close(item)
                        continue
                    try:
                        item.close()
                    except BufferError:  # an array still views it: next time
                        _to_close.append(item)


def read_time_hashes(file: DatabaseFile, conn: Any, root: int,
                     ranges: list[tuple[int, int]]) -> tuple[Any, Any] | None:
    """The entries of the ``scans_time`` index (whose root page is *root*) whose time
    lies in one of *ranges* (sorted, disjoint, ``[start, end)``): their times (int64)
    and visitor hashes (uint64, the 8 bytes read little-endian, as
    :func:`qrq.analytics.shard.hash_array` reads them), both in index order; None if
    the file cannot be read this way. *conn* must be in a read transaction."""
    if file.fd is None:
        return None
    try:
        # What SQLite has open (the path with its links resolved: its WAL lies beside
        # that file; as bytes, the name need not be UTF-8) and its snapshot's header
        # fields, in one statement.
        name, *snapshot = conn.execute(
            "select (select cast(file as blob) from pragma_database_list "
            "where name = 'main'), page_count, schema_version, freelist_count "
            "from pragma_page_count, pragma_schema_version, pragma_freelist_count").fetchone()
        header = os.pread(file.fd, 100, 0)
        page_size = _page_size(header)
        if not _file_is_snapshot(file, os.fsdecode(name), header, page_size, *snapshot):
            return None
        if file.map is None:
            file.map = mmap.mmap(file.fd, 0, access=mmap.ACCESS_READ)
        entries = _read(file.map, root, page_size, snapshot[0], ranges)
        return entries if entries and _edges_agree(conn, *entries, ranges) else None
    except (ValueError, IndexError, OverflowError, OSError, struct.error):
        return None  # not what qrq's schema makes: SQLite reads it


def _edges_agree(conn: Any, times: Any, hashes: Any, ranges: list[tuple[int, int]]) -> bool:
    """Whether SQLite finds the same first entry in the first range and last entry in
    the last one: it reads the file read here, not another one with the same header
    counters swapped in and back between the two opens."""
    for (lo, hi), order, k in ((ranges[0], "", 0), (ranges[-1], " desc", -1)):
        row = conn.execute(
            "select scanned_at, visitor_hash from scans indexed by scans_time where "
            f"scanned_at >= ? and scanned_at < ? order by scanned_at{order}, "
            f"visitor_hash{order} limit 1", (lo, hi)).fetchone()
        inside = bool(len(times)) and lo <= times[k] < hi
        if row != ((int(times[k]), int(hashes[k]).to_bytes(8, "little")) if inside else None):
            return False
    return True


def _file_is_snapshot(file: DatabaseFile, name: str, header: bytes, page_size: int,
                      page_count: int, schema_version: int, freelist_count: int) -> bool:
    """Whether the file, now and for the rest of the transaction, holds the
    connection's snapshot: *name* is the file SQLite opened, *page_count* and the
    counters are the snapshot's (see the module's docstring)."""
    own = os.fstat(file.fd)
    status = os.stat(name)
    if (status.st_dev, status.st_ino) != (own.st_dev, own.st_ino):
        return False  # the path named another file when SQLite opened it, or does now
    if own.st_size < page_count * page_size:
        return False
    # 1 1: a rollback journal, 2 2: WAL; SQLite reads a WAL it finds beside either.
    if header[18:20] not in (b"\x01\x01", b"\x02\x02") or not _wal_copied(file, name):
        return False
    # The file's header must say what the snapshot says (which also tells a file
    # swapped for another and back between our open and SQLite's, mostly).
    return (int.from_bytes(header[40:44], "big") == schema_version
            and int.from_bytes(header[36:40], "big") == freelist_count
            and (header[24:28] != header[92:96]  # an old writer's: not kept up to date
                 or int.from_bytes(header[28:32], "big") == page_count))


def _wal_copied(file: DatabaseFile, name: str) -> bool:
    """Whether the database's WAL is missing, empty, or copied into the file to its
    last frame; a checkpoint copies no frame newer than a reader's snapshot into the
    file while the reader keeps its lock, so the file stays the snapshot."""
    try:
        if os.stat(f"{name}-wal").st_size == 0:
            return True
    except FileNotFoundError:
        return True
    if file.shm_fd is None:
        # Only a WAL index this process may write is the one SQLite uses (and rebuilt
        # if it was stale): one it may not write, SQLite ignores, rebuilding its own in
        # memory from the WAL. Never written here.
        try:
            file.shm_fd = os.open(f"{name}-shm", os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            return False
    shm = os.pread(file.shm_fd, _SHM_HEADER, 0)
    if len(shm) < _SHM_HEADER or shm[:48] != shm[48:96] or shm[12] != 1:
        return False  # not set up, or being written
    # Native byte order: the WAL index is shared memory. mxFrame and nBackfill.
    (frames,), (copied,) = struct.unpack_from("=I", shm, 16), struct.unpack_from("=I", shm, 96)
    return frames == copied


def _page_size(header: bytes) -> int:
    if len(header) < 100 or header[:16] != _MAGIC:
        raise ValueError("not an SQLite database")
    size = int.from_bytes(header[16:18], "big")
    size = 65536 if size == 1 else size
    if size < 512 or size & (size - 1):
        raise ValueError("bad page size")
    return size


def _read(buf: mmap.mmap, root: int, page_size: int, page_count: int,
          ranges: list[tuple[int, int]]) -> tuple[Any, Any] | None:
    import numpy

    if len(buf) < page_count * page_size or not ranges:
        return None
    data = _Views(buf)
    # Each item's entries, in key order: a leaf page's cells, or one interior cell's
    # entry (stored past its 4-byte child pointer).
    items = numpy.array(_items(buf, page_size, root, page_count, ranges), numpy.int64)
    leaf = items >= 0
    counts = numpy.ones(len(items), numpy.int64)
    counts[leaf] = data.u16[items[leaf] + 3]
    if (8 + 2 * counts[leaf] > page_size).any():
        return None
    ends = numpy.cumsum(counts)  # each item's end among the entries
    times, hashes, last, first = [], [], None, 0
    while first < len(items):  # about a million entries at a time, at least one item
        began = ends[first] - counts[first]
        stop = max(first + 1, int(numpy.searchsorted(ends, began + _CHUNK, "right")))
        some = slice(first, stop)
        chunk_times, chunk_hashes = _decode(data, _entry_offsets(
            data, items[some], leaf[some], counts[some], page_size))
        if (chunk_times[1:] < chunk_times[:-1]).any() or (
                last is not None and len(chunk_times) and chunk_times[0] < last):
            return None
        if len(chunk_times):
            last = chunk_times[-1]
        for lo, hi in ranges:
            start, end = numpy.searchsorted(chunk_times, [lo, hi])
            if end > start:
                times.append(chunk_times[start:end])
                hashes.append(chunk_hashes[start:end])
        first = stop
    if len(times) == 1:
        return times[0], hashes[0]
    return (numpy.concatenate(times or [numpy.zeros(0, numpy.int64)]),
            numpy.concatenate(hashes or [numpy.zeros(0, numpy.uint64)]))


def _items(buf: mmap.mmap, page_size: int, root: int, page_count: int,
           ranges: list[tuple[int, int]]) -> list[int]:
    """The index's leaf pages (their offsets in the file) and its interior cells (minus
    their entries' offsets), in key order, leaving out the subtrees whose keys lie
    outside *ranges*: a walk of its interior pages."""
    u16, u32 = struct.Struct(">H").unpack_from, struct.Struct(">I").unpack_from
    # A page to walk: its number and the bounds of its keys (None: no bound).
    items, todo, seen = [], [(root, None, None)], set()
    while todo:
        item = todo.pop()
        if isinstance(item, int):  # an interior cell's entry
            items.append(item)
            continue
        page, low, high = item
        if not 2 <= page <= page_count or page in seen:
            raise ValueError("page number out of range, or a page met twice")
        seen.add(page)
        base = (page - 1) * page_size
        kind = buf[base]
        if kind == _LEAF:
            items.append(base)
            continue
        if kind != _INTERIOR:
            raise ValueError("not an index page")
        count, = u16(buf, base + 3)
        cells = [base + pointer for pointer in struct.unpack_from(f">{count}H", buf, base + 12)]
        if any(not base + 12 < cell <= base + page_size - 18 for cell in cells):
            raise ValueError("cell outside its page")
        # Within one range, every child is wanted: no key to read.
        inside = low is not None and high is not None and _within(ranges, low, high)
        keys = [low] * count if inside else [_entry_time(buf, cell + 4) for cell in cells]
        bounds = [low, *keys, high]  # child j's keys lie between bounds j and j + 1
        children = [*(u32(buf, cell)[0] for cell in cells), u32(buf, base + 8)[0]]
        for j in range(count, -1, -1):  # pushed right to left: walked left to right
            if j < count:
                todo.append(-(cells[j] + 4))  # its entry, after the child on its left
            lo, hi = (low, high) if inside else (bounds[j], bounds[j + 1])
            if inside or _meets(ranges, lo, hi):
                todo.append((children[j], lo, hi))
    return items


def _meets(ranges: list[tuple[int, int]], low: int | None, high: int | None) -> bool:
    """Whether any of *ranges* holds a key from *low* to *high* (both included)."""
    return any((high is None or lo <= high) and (low is None or low < hi) for lo, hi in ranges)


def _within(ranges: list[tuple[int, int]], low: int, high: int) -> bool:
    """Whether one of *ranges* holds every key from *low* to *high*."""
    return any(lo <= low and high < hi for lo, hi in ranges)


def _entry_time(buf: mmap.mmap, entry: int) -> int:
    """The time of the index entry at *entry* (of an interior page: the walk)."""
    if buf[entry] >= 0x80 or buf[entry + 1] != 4 or buf[entry + 3] != 28:
        raise ValueError("not an entry of scans_time")
    size = _INT_BYTES[buf[entry + 2]]
    if size < 0:
        raise ValueError("not an entry of scans_time")
    if size == 0:  # the constants 0 and 1
        return buf[entry + 2] - 8
    return int.from_bytes(buf[entry + 5:entry + 5 + size], "big", signed=True)


class _Views:
    """The file as arrays of integers starting at every byte offset (numpy gathers
    from them at any offset, nothing copied); ``u8_4`` and the like start 4 bytes in."""

    def __init__(self, buf: mmap.mmap):
        import numpy

        def at_every_byte(dtype: str, skip: int = 0) -> Any:
            size = numpy.dtype(dtype).itemsize
            return numpy.ndarray((len(buf) - skip - size + 1,), dtype, buf, skip, (1,))

        self.u8_4 = at_every_byte("u1", 4)
        self.u16, self.u32 = at_every_byte(">u2"), at_every_byte(">u4")
        self.s32_5, self.s64 = at_every_byte(">i4", 5), at_every_byte(">i8")
        self.le64, self.le64_9 = at_every_byte("<u8"), at_every_byte("<u8", 9)


def _entry_offsets(data: _Views, items: Any, leaf: Any, counts: Any, page_size: int) -> Any:
    """The file offsets of the first *counts* entries of each item, in order: a leaf
    page's cells, or the entry of an interior cell."""
    import numpy

    starts = numpy.cumsum(counts) - counts
    # Where each cell's pointer lies: 8 bytes into its page, 2 bytes each (a dummy for
    # an interior cell's entry, whose offset is known).
    where = numpy.repeat(numpy.where(leaf, items + 8, 8) - 2 * starts, counts) + \
        2 * numpy.arange(int(counts.sum()), dtype=numpy.int64)
    pointers = data.u16[where].astype(numpy.int64)
    inner = starts[~leaf]
    pointers[inner] = 8
    if ((pointers < 8) | (pointers > page_size - 14)).any():
        raise ValueError("cell outside its page")
    offsets = (where & -page_size) + pointers  # the page's start, plus the pointer
    offsets[inner] = -items[~leaf]
    return offsets


# Bytes of an integer by its serial type (1-6; 8 and 9 are the constants 0 and 1); -1:
# not an integer.
_INT_BYTES = [-1] * 256
for _type, _size in {1: 1, 2: 2, 3: 3, 4: 4, 5: 6, 6: 8, 8: 0, 9: 0}.items():
    _INT_BYTES[_type] = _size
# The last three of an entry's first four bytes, as it mostly begins: a 4-byte header
# (its size and three types), a 4-byte time (type 4: Unix seconds until 2038), an 8-byte
# blob (type 28).
_COMMON_HEAD = 0x04041C


def _decode(data: _Views, offsets: Any) -> tuple[Any, Any]:
    """The times (int64) and hashes of the entries at *offsets*; raises ValueError
    unless every entry is a record of an integer time, an 8-byte blob and an integer
    row id, as ``scans_time`` holds them (the row id is not read)."""
    import numpy

    sizes = numpy.array(_INT_BYTES, numpy.int64)
    head = data.u32[offsets]  # payload size, header size, time's type, hash's type
    n_rowid = sizes[data.u8_4[offsets]]  # -1, not an integer: no payload size matches
    if ((head & 0xFFFFFF) == _COMMON_HEAD).all():
        if not ((head >> 24) == 4 + 4 + 8 + n_rowid).all():
            raise ValueError("not an entry of scans_time")
        return data.s32_5[offsets].astype(numpy.int64), data.le64_9[offsets]
    n_time = sizes[(head >> 8) & 0xFF]
    if not (((head >> 16) & 0xFF) == 4).all() or not ((head & 0xFF) == 28).all() or \
            (n_time < 0).any() or not ((head >> 24) == 4 + n_time + 8 + n_rowid).all():
        raise ValueError("not an entry of scans_time")
    times = numpy.empty(len(offsets), numpy.int64)
    for n in numpy.unique(n_time).tolist():
        some = n_time == n
        if n == 0:  # the constants 0 and 1
            times[some] = ((head[some] >> 8) & 0xFF) - 8
            continue
        # The n bytes as the low end of 8, sign-extended.
        shift = 64 - 8 * n
        times[some] = (data.s64[offsets[some] + 5 + n - 8] << shift) >> shift
    return times, data.le64[offsets + 5 + n_time]
