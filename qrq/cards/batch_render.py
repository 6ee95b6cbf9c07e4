"""Rendering for bulk generation (pure): fast QR matrices, SVG, and a streamed PDF.

Three things :mod:`qrq.cards.qr` does not need for one PDF of at most a thousand
cards, but a batch of ten thousand does:

- :func:`pack_rows` / :func:`unpack_matrix` keep a matrix in a few bytes, so
  10,000 encoded items wait in the database, not in memory.
- :func:`matrix_svg` draws a matrix as one SVG path (one rectangle per run);
  :func:`matrix_png` as a two-colour PNG.
- :class:`PdfStream` writes a PDF page by page to a file. reportlab's canvas
  keeps every page in memory until it saves (about 11 MB per thousand cards);
  this writer keeps only the byte offsets. Cards are still drawn by
  :func:`qrq.cards.qr.draw_card`, onto a :class:`PageCanvas` that speaks the few
  canvas calls it makes.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from typing import BinaryIO

from reportlab.lib.units import mm
from reportlab.pdfbase.pdfmetrics import stringWidth

from qrq.cards.qr import FONT, FONT_BOLD, CardSpec, dark_runs, draw_card

# -- packed matrices -------------------------------------------------------------------

_BITS = bytes.maketrans(b"\x00\x01", b"01")


def pack_rows(n: int, rows: list[int]) -> bytes:
    """Row integers as :func:`pack_matrix` packs a matrix."""
    bits = "".join(format(r, f"0{n}b") for r in rows)
    return bytes([n]) + int("1" + bits, 2).to_bytes((n * n + 8) // 8, "big")


def pack_matrix(matrix: Sequence[Sequence[bool]]) -> bytes:
    """A matrix as bytes: its side, then its modules row by row, 8 to a byte."""
    n = len(matrix)
    bits = b"".join(bytes(row) for row in matrix).translate(_BITS)
    return bytes([n]) + int(b"1" + bits, 2).to_bytes((n * n + 8) // 8, "big")


def unpack_matrix(blob: bytes) -> list[list[bool]]:
    n = blob[0]
    bits = bin(int.from_bytes(blob[1:], "big"))[3:]
    return [[ch == "1" for ch in bits[r * n:(r + 1) * n]] for r in range(n)]


def matrix_svg(matrix: Sequence[Sequence[bool]], quiet_zone: int = 4, fg: str = "#000000",
               bg: str = "#ffffff", size_mm: float | None = None, title: str = "") -> str:
    """An SVG of *matrix* with its quiet zone, one path of module-sized rectangles."""
    side = len(matrix) + 2 * quiet_zone
    path = "".join(f"M{c + quiet_zone} {r + quiet_zone}h{n}v1h-{n}z"
                   for r, c, n in dark_runs(matrix))
    dims = f' width="{size_mm:g}mm" height="{size_mm:g}mm"' if size_mm else ""
    label = ""
    if title:
        escaped = title.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        label = f"<title>{escaped}</title>"
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {side} {side}"{dims} '
            f'shape-rendering="crispEdges">{label}<rect width="{side}" height="{side}" '
            f'fill="{bg}"/><path fill="{fg}" d="{path}"/></svg>\n')


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data)))


def matrix_png(matrix: Sequence[Sequence[bool]], quiet_zone: int = 4, fg: str = "#000000",
               bg: str = "#ffffff", size_mm: float | None = None, dpi: int = 300) -> bytes:
    """A two-colour PNG of *matrix* with its quiet zone, *size_mm* wide at *dpi* (10
    pixels per module without a size), in whole pixels per module so edges stay sharp.

    Written directly (1 bit per pixel, a palette of *bg* and *fg*): each module row
    is one row of pixels followed by copies that PNG's "Up" filter turns into zeros,
    which deflate to almost nothing. Three times faster than Pillow's encoder on
    these images, the same pixels (``tests/test_batch.py``).
    """
    side = len(matrix) + 2 * quiet_zone
    scale = max(1, round(size_mm / 25.4 * dpi / side)) if size_mm else 10
    width = side * scale
    row_bytes = (width + 7) // 8
    margin, tail = "0" * (quiet_zone * scale), "0" * (-width % 8)
    dark, light = "1" * scale, "0" * scale
    again = b"\x02" + bytes(row_bytes)  # filter Up, no change: the row above again
    blank = (b"\x00" + bytes(row_bytes) + again * (quiet_zone * scale - 1)
             if quiet_zone else b"")
    rows = [blank]
    for row in matrix:
        bits = margin + "".join(dark if module else light for module in row) + margin + tail
        rows.append(b"\x00" + int(bits, 2).to_bytes(row_bytes, "big") + again * (scale - 1))
    rows.append(blank)
    per_metre = round(dpi / 0.0254)
    return b"".join((
        b"\x89PNG\r\n\x1a\n",
        _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, width, 1, 3, 0, 0, 0)),
        _png_chunk(b"PLTE", bytes.fromhex(bg[1:] + fg[1:])),
        _png_chunk(b"pHYs", struct.pack(">IIB", per_metre, per_metre, 1)),
        _png_chunk(b"IDAT", zlib.compress(b"".join(rows))),
        _png_chunk(b"IEND", b""),
    ))


# -- a PDF written page by page -----------------------------------------------------------

_FONTS = {FONT: b"/F1", FONT_BOLD: b"/F2"}
_ESCAPES = {ord("\\"): b"\\\\", ord("("): b"\\(", ord(")"): b"\\)"}


def _num(value: float) -> bytes:
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    return (text if text not in ("", "-0") else "0").encode()


def _pdf_string(text: str) -> bytes:
    raw = text.encode("cp1252", errors="replace")  # Helvetica's WinAnsi encoding
    out = bytearray(b"(")
    for byte in raw:
        if byte in _ESCAPES:
            out += _ESCAPES[byte]
        elif 32 <= byte < 127:
            out.append(byte)
        else:
            out += b"\\%03o" % byte
    return bytes(out + b")")


class _Path:
    def __init__(self) -> None:
        self.ops: list[bytes] = []

    def rect(self, x: float, y: float, w: float, h: float) -> None:
        self.ops.append(b"%g %g %g %g re" % (x, y, w, h))


class PageCanvas:
    """The canvas calls :func:`qrq.cards.qr.draw_card` makes, written as PDF operators."""

    def __init__(self) -> None:
        self.ops: list[bytes] = []
        self._font = (FONT, 12.0)

    def setFillColor(self, color) -> None:  # noqa: N802  (reportlab's names)
        self.ops.append(b"%s %s %s rg" % (_num(color.red), _num(color.green),
                                           _num(color.blue)))

    def rect(self, x, y, w, h, stroke=0, fill=1) -> None:
        self.ops.append(b"%.3f %.3f %.3f %.3f re %s" % (x, y, w, h,
                                                          b"f" if fill else b"n"))

    def beginPath(self) -> _Path:  # noqa: N802
        return _Path()

    def saveState(self) -> None:  # noqa: N802
        self.ops.append(b"q")

    def restoreState(self) -> None:  # noqa: N802
        self.ops.append(b"Q")

    def translate(self, dx: float, dy: float) -> None:
        self.ops.append(b"1 0 0 1 %s %s cm" % (_num(dx), _num(dy)))

    def scale(self, sx: float, sy: float) -> None:
        self.ops.append(b"%s 0 0 %s 0 0 cm" % (_num(sx), _num(sy)))

    def drawPath(self, path: _Path, stroke=0, fill=1) -> None:  # noqa: N802
        if path.ops:
            self.ops.extend(path.ops)
            self.ops.append(b"f" if fill else b"n")

    def stringWidth(self, text: str, font: str, size: float) -> float:  # noqa: N802
        return stringWidth(text, font, size)

    def setFont(self, font: str, size: float) -> None:  # noqa: N802
        self._font = (font, size)

    def drawCentredString(self, x: float, y: float, text: str) -> None:  # noqa: N802
        font, size = self._font
        left = x - stringWidth(text, font, size) / 2
        self.ops.append(b"BT %s %s Tf %s %s Td %s Tj ET" % (
            _FONTS[font], _num(size), _num(left), _num(y), _pdf_string(text)))

    def take(self) -> bytes:
        data, self.ops = b"\n".join(self.ops), []
        return data


class PdfStream:
    """A PDF written to *out* page by page; only object offsets stay in memory.

    Objects 1 to 4 are the catalog, the page tree and the two fonts, written at
    :meth:`close` (a PDF's objects may come in any order; the xref points at them).
    """

    def __init__(self, out: BinaryIO, title: str = "QR cards") -> None:
        self.out = out
        self.title = title
        self.offsets: dict[int, int] = {}
        self.pages: list[int] = []
        self.next_id = 6
        self.out.write(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")

    def _object(self, number: int, body: bytes) -> None:
        self.offsets[number] = self.out.tell()
        self.out.write(b"%d 0 obj\n%s\nendobj\n" % (number, body))

    def add_page(self, width: float, height: float, content: bytes) -> None:
        """One page of *width* x *height* points drawing *content* (PDF operators)."""
        stream_id, page_id = self.next_id, self.next_id + 1
        self.next_id += 2
        packed = zlib.compress(content, 6)
        self._object(stream_id, b"<< /Length %d /Filter /FlateDecode >>\nstream\n%s\n"
                                b"endstream" % (len(packed), packed))
        self._object(page_id, b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 %s %s] "
                              b"/Contents %d 0 R /Resources << /Font << /F1 3 0 R "
                              b"/F2 4 0 R >> >> >>" % (_num(width), _num(height), stream_id))
        self.pages.append(page_id)

    def close(self) -> None:
        """Write the page tree, fonts, document info, xref and trailer."""
        kids = b" ".join(b"%d 0 R" % p for p in self.pages)
        self._object(1, b"<< /Type /Catalog /Pages 2 0 R >>")
        self._object(2, b"<< /Type /Pages /Count %d /Kids [%s] >>" % (len(self.pages), kids))
        for number, font in ((3, FONT), (4, FONT_BOLD)):
            self._object(number, b"<< /Type /Font /Subtype /Type1 /BaseFont /%s "
                                 b"/Encoding /WinAnsiEncoding >>" % font.encode())
        self._object(5, b"<< /Title %s /Creator (qrq) >>" % _pdf_string(self.title))
        xref = self.out.tell()
        size = self.next_id
        self.out.write(b"xref\n0 %d\n0000000000 65535 f \n" % size)
        for number in range(1, size):
            self.out.write(b"%010d 00000 n \n" % self.offsets[number])
        self.out.write(b"trailer\n<< /Size %d /Root 1 0 R /Info 5 0 R >>\nstartxref\n%d\n"
                       b"%%%%EOF\n" % (size, xref))


class CardSheets:
    """Cards laid out ``cols x rows`` per page as their spec says, streamed to a PdfStream.

    Cards of one layout fill a page in order; a card of another page size or
    grid starts a new page.
    """

    def __init__(self, pdf: PdfStream) -> None:
        self.pdf = pdf
        self.canvas = PageCanvas()
        self.layout: tuple | None = None
        self.slot = 0
        self.cards = 0

    def add(self, spec: CardSpec, payload: str, matrix) -> None:
        layout = (spec.page_width_mm, spec.page_height_mm, spec.cols, spec.rows)
        if layout != self.layout or self.slot == spec.cards_per_page:
            self.flush()
            self.layout = layout
        col, row = self.slot % spec.cols, self.slot // spec.cols
        draw_card(self.canvas, spec, payload, col * spec.card_width_mm * mm,
                  (spec.page_height_mm - (row + 1) * spec.card_height_mm) * mm, matrix)
        self.slot += 1
        self.cards += 1

    def flush(self) -> None:
        if self.slot:
            width, height = self.layout[0] * mm, self.layout[1] * mm
            self.pdf.add_page(width, height, self.canvas.take())
            self.slot = 0

    def close(self) -> int:
        """Finish the last page; a PDF without cards gets one blank A4 page. Returns pages."""
        self.flush()
        if not self.pdf.pages:
            self.pdf.add_page(210 * mm, 297 * mm, b"")
        self.pdf.close()
        return len(self.pdf.pages)
