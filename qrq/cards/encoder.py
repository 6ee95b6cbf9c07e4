"""QR matrices, fast: exactly the codes the qrcode library makes, in a third of the time.

qrcode picks the mask by building the whole code eight times. Here the data
bits are placed once and each mask is applied with integer XORs on whole rows;
the penalty rules run on bit strings. The score and the tie-break are
qrcode's, so the chosen mask, and the matrix, are the same (a test compares
them with :func:`reference_matrix` over many payloads and levels).
"""

from __future__ import annotations

import functools
import operator
import re

import qrcode
from qrcode.constants import ERROR_CORRECT_H, ERROR_CORRECT_L, ERROR_CORRECT_M, ERROR_CORRECT_Q

from qrq.cards.qrcode_private import TOO_LONG, codewords, fit, function_cells, mask_predicate

ERROR_CORRECTION = {"L": ERROR_CORRECT_L, "M": ERROR_CORRECT_M,
                    "Q": ERROR_CORRECT_Q, "H": ERROR_CORRECT_H}


class DataTooLong(ValueError):
    """The payload does not fit in a QR code at this error-correction level."""


def _too_long(data: str, error_correction: str) -> DataTooLong:
    return DataTooLong(f"{len(data.encode())} bytes do not fit in a QR code at "
                       f"error correction {error_correction}")


@functools.lru_cache(maxsize=1024)  # requests repeat their templates' payloads
def check_fits(data: str, error_correction: str = "M") -> int:
    """The QR version that holds *data*, without building the code (cheap).

    :raises DataTooLong: *data* exceeds a version-40 code at this level.
    """
    try:
        return fit(data, ERROR_CORRECTION[error_correction])[0]
    except TOO_LONG as exc:
        raise _too_long(data, error_correction) from exc


def reference_matrix(data: str, error_correction: str = "M") -> list[list[bool]]:
    """qrcode's own matrix for *data* (slow; the yardstick for :func:`qr_matrix`)."""
    code = qrcode.QRCode(error_correction=ERROR_CORRECTION[error_correction], border=0)
    code.add_data(data)
    try:
        code.make(fit=True)
    except TOO_LONG as exc:
        raise _too_long(data, error_correction) from exc
    return code.get_matrix()


_RUNS = re.compile(r"0{5,}|1{5,}")


@functools.cache
def _layout(version: int) -> tuple:
    """Per version, as row integers: the function patterns as qrcode's mask test has
    them (format and version cells light), each mask restricted to the data cells;
    and the order in which the data bits fill the cells (qrcode's ``map_data``)."""
    cells = function_cells(version, None, None)
    n = len(cells)
    func = tuple(int("".join("1" if c else "0" for c in row), 2) for row in cells)
    masks = []
    for k in range(8):
        test = mask_predicate(k)
        masks.append(tuple(
            int("".join("1" if c is None and test(r, col) else "0"
                        for col, c in enumerate(row)), 2)
            for r, row in enumerate(cells)))
    # map_data's zigzag: two columns at a time, upwards then downwards, from the right.
    order, row, step = [], n - 1, -1
    for col in range(n - 1, 0, -2):
        if col <= 6:
            col -= 1  # skip the vertical timing pattern
        while 0 <= row < n:
            order.extend((row, c) for c in (col, col - 1) if cells[row][c] is None)
            row += step
        row -= step
        step = -step
    position = {cell: k for k, cell in enumerate(order)}
    pad = len(order)  # every other cell reads the '0' after the data bits
    scatter = operator.itemgetter(*(position.get((r, c), pad)
                                    for r in range(n) for c in range(n)))
    return func, tuple(masks), scatter, len(order)


@functools.cache
def _final_function_rows(version: int, error_correction: int, mask: int) -> tuple:
    """The function patterns with the real format (and version) bits for *mask*."""
    cells = function_cells(version, error_correction, mask)
    return tuple(int("".join("1" if c else "0" for c in row), 2) for row in cells)


def _penalty(rows: list[int], n: int) -> int:
    """qrcode's ``util.lost_point`` of a matrix given as row integers."""
    lines = [format(r, f"0{n}b") for r in rows]
    text = " ".join(lines) + " " + " ".join(map("".join, zip(*lines, strict=True)))
    runs = _RUNS.findall(text)
    # Neither finder-like pattern can overlap itself, so plain counts find every one.
    finders = text.count("10111010000") + text.count("00001011101")
    score = sum(map(len, runs)) - 2 * len(runs) + 40 * finders
    full = (1 << n) - 1
    blocks = 0
    for a, b in zip(rows, rows[1:], strict=False):
        same = ~(a ^ b) & full
        blocks += (same & (same >> 1) & ~(a ^ (a >> 1)) & (full >> 1)).bit_count()
    score += 3 * blocks
    dark = sum(r.bit_count() for r in rows)
    return score + int(abs(float(dark) / (n ** 2) * 100 - 50) / 5) * 10


def qr_rows(data: str, error_correction: str = "M") -> tuple[int, list[int]]:
    """The side and the row integers (leftmost module the highest bit) of the
    matrix :func:`reference_matrix` returns for *data*.

    :raises DataTooLong: *data* exceeds a version-40 code at this level.
    """
    level = ERROR_CORRECTION[error_correction]
    try:
        version, segments = fit(data, level)
        words = codewords(version, level, segments)
    except TOO_LONG as exc:
        raise _too_long(data, error_correction) from exc
    func, masks, scatter, cells = _layout(version)
    n = version * 4 + 17
    bits = format(int.from_bytes(bytes(words), "big"), f"0{8 * len(words)}b")
    placed = "".join(scatter(bits[:cells].ljust(cells + 1, "0")))
    raw = [int(placed[r * n:(r + 1) * n], 2) for r in range(n)]
    best, best_score = 0, None
    for k in range(8):
        score = _penalty([f | (r ^ m) for f, r, m in zip(func, raw, masks[k], strict=True)],
                         n)
        if best_score is None or score < best_score:  # the first minimum, as qrcode
            best, best_score = k, score
    final = _final_function_rows(version, level, best)
    return n, [f | (r ^ m) for f, r, m in zip(final, raw, masks[best], strict=True)]


def qr_matrix(data: str, error_correction: str = "M") -> list[list[bool]]:
    """The module matrix of the smallest QR code holding *data*, without quiet zone:
    exactly :func:`reference_matrix`'s, in about a third of the time.

    :raises DataTooLong: *data* exceeds a version-40 code at this level.
    """
    n, rows = qr_rows(data, error_correction)
    return [[ch == "1" for ch in format(r, f"0{n}b")] for r in rows]
