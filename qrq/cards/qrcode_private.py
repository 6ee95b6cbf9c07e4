"""Every place qrq reaches into undocumented parts of the qrcode library.

qrcode's documented API builds a whole code (``QRCode``, ``add_data``, ``make``,
``get_matrix``); it has none for the steps :mod:`qrq.cards.encoder` does itself to be
three times faster: the fitted version and data segments, the codewords with error
correction, the function patterns of a version, and the mask predicates. These are
``QRCode.best_fit``/``data_list``/``setup_*``/``modules``, and ``qrcode.util.create_data``
and ``mask_func``. Keeping them here means an upgrade of qrcode is checked in one file:
read these names in ``qrcode/main.py`` and ``qrcode/util.py`` and run
``tests/test_encoder.py``, which compares the fast matrix with qrcode's own.
Checked with qrcode 7.4.2 and 8.2 (setup.cfg bounds it below 8.3 for this reason).
"""

from __future__ import annotations

from collections.abc import Callable

import qrcode
import qrcode.exceptions
import qrcode.util

# What qrcode raises for data that fits no version (ValueError for some inputs).
TOO_LONG = (qrcode.exceptions.DataOverflowError, ValueError)


def fit(data: str, level: int) -> tuple[int, list]:
    """The smallest version holding *data* at error-correction *level*, and qrcode's
    data segments for it.

    :raises DataOverflowError, ValueError: (``TOO_LONG``) it fits no version.
    """
    code = qrcode.QRCode(error_correction=level, border=0)
    code.add_data(data)
    return code.best_fit(), code.data_list


def codewords(version: int, level: int, segments: list) -> list[int]:
    """The data and error-correction codewords, interleaved, as qrcode places them."""
    return qrcode.util.create_data(version, level, segments)


def mask_predicate(mask: int) -> Callable[[int, int], bool]:
    """qrcode's test of whether mask *mask* flips the cell (row, column)."""
    return qrcode.util.mask_func(mask)


def function_cells(version: int, level: int | None, mask: int | None) -> list[list]:
    """qrcode's function patterns of *version*, data cells None. Without a *mask* the
    format and version cells are light, as in qrcode's mask test."""
    code = qrcode.QRCode(version=version, border=0,
                         error_correction=level or qrcode.ERROR_CORRECT_M)
    n = code.modules_count = version * 4 + 17
    code.modules = [[None] * n for _ in range(n)]
    code.setup_position_probe_pattern(0, 0)
    code.setup_position_probe_pattern(n - 7, 0)
    code.setup_position_probe_pattern(0, n - 7)
    code.setup_position_adjust_pattern()
    code.setup_timing_pattern()
    code.setup_type_info(mask is None, mask or 0)
    if version >= 7:
        code.setup_type_number(mask is None)
    return code.modules
