import random
import string

import pytest

from qrq.cards.encoder import DataTooLong, check_fits, qr_matrix, qr_rows, reference_matrix


def test_fast_matrix_is_exactly_qrcodes_matrix():
    rng = random.Random(4)
    alphabet = string.ascii_letters + string.digits + "/:.-?=&é"
    for length in (1, 10, 30, 80, 200, 400, 900):
        for ec in "LMQH":
            data = "".join(rng.choice(alphabet) for _ in range(length))
            assert qr_matrix(data, ec) == reference_matrix(data, ec), (length, ec)


def test_rows_and_matrix_agree():
    n, rows = qr_rows("https://qrcards.example/c/1", "Q")
    matrix = qr_matrix("https://qrcards.example/c/1", "Q")
    assert n == len(matrix) == 29  # version 3
    assert [int("".join("1" if c else "0" for c in row), 2) for row in matrix] == rows


@pytest.mark.parametrize("make", [qr_matrix, reference_matrix, check_fits])
def test_too_long_for_any_code(make):
    with pytest.raises(DataTooLong, match="do not fit"):
        make("x" * 3000, "H")


def test_check_fits_names_the_version():
    assert check_fits("hi") == 1
    assert check_fits("x" * 2000, "L") > 30
