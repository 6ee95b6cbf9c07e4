"""Cards laid out on pages: QR codes drawn as vector paths, text, pages (pure: no
Flask, Huey or database).

Each code is built from the qrcode matrix and drawn as filled rectangles, one
per horizontal run of dark modules, so it stays crisp at any zoom, adds a few
kilobytes per code and needs no raster image. Text is drawn as a literal string,
never interpreted as markup, so user text appears as typed. Pages go to
:class:`~qrq.cards.pdf.PdfStream`, the one PDF writer, for a single-template job
(:func:`write_pdf`) and a batch (:class:`CardSheets`) alike.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import BinaryIO

from reportlab.lib.units import mm

from qrq.artifacts import DirectoryStore
from qrq.cards.encoder import ERROR_CORRECTION, DataTooLong, check_fits, qr_matrix  # noqa: F401
from qrq.cards.pdf import FONT, FONT_BOLD, PageContent, PdfStream, text_width

_DARK = re.compile(rb"\x01+")
A4_MM = (210.0, 297.0)
# Crop marks: a cut line's mark starts this far outside the card, so a cut a little
# off the line does not leave a piece of it on the card, and is this long.
CROP_GAP_MM = 2.0
CROP_LENGTH_MM = 4.0
CROP_LINE_PT = 0.25
ELLIPSIS = "\u2026"  # in Windows-1252, so printable by the PDF fonts


@dataclasses.dataclass(frozen=True)
class CardSpec:
    """Everything needed to lay out cards on pages; all lengths in millimetres."""

    page_width_mm: float
    page_height_mm: float
    cols: int = 1
    rows: int = 1
    qr_size_mm: float = 60.0
    qr_x_mm: float | None = None
    qr_y_mm: float | None = None
    title: str = ""
    lines: tuple[str, ...] = ()
    fg_color: str = "#000000"
    bg_color: str = "#ffffff"
    error_correction: str = "M"
    quiet_zone: int = 4
    # Blank space between the page edge and anything printed (the print_margin_mm
    # setting, which build_spec passes); crop marks, if any, lie inside it.
    margin_mm: float = 0.0
    crop_marks: bool = False

    @property
    def cards_per_page(self) -> int:
        return self.cols * self.rows

    @property
    def inset_mm(self) -> float:
        """Distance from each page edge to the cards' trim box (the grid's outline)."""
        return self.margin_mm + (CROP_GAP_MM + CROP_LENGTH_MM if self.crop_marks else 0.0)

    @property
    def card_width_mm(self) -> float:
        return (self.page_width_mm - 2 * self.inset_mm) / self.cols

    @property
    def card_height_mm(self) -> float:
        return (self.page_height_mm - 2 * self.inset_mm) / self.rows

    def card_origin_mm(self, slot: int) -> tuple[float, float]:
        """Bottom-left corner of the card in *slot* (0 top-left, row by row), in mm."""
        col, row = slot % self.cols, slot // self.cols
        return (self.inset_mm + col * self.card_width_mm,
                self.page_height_mm - self.inset_mm - (row + 1) * self.card_height_mm)


@dataclasses.dataclass(frozen=True)
class RenderResult:
    path: Path
    pages: int
    cards: int
    bytes: int


def dark_runs(matrix: Sequence[Sequence[bool]]) -> Iterable[tuple[int, int, int]]:
    """Yield ``(row, start_col, length)`` for each horizontal run of dark modules."""
    for r, row in enumerate(matrix):
        for found in _DARK.finditer(bytes(row)):
            yield r, found.start(), found.end() - found.start()


def draw_qr(page: PageContent, matrix: Sequence[Sequence[bool]], x: float, y: float,
            size: float, fg: str, bg: str, quiet_zone: int) -> None:
    """Draw *matrix* with its quiet zone as a *size*-point square at (x, y), bottom-left."""
    module = size / (len(matrix) + 2 * quiet_zone)
    page.fill_color(bg)
    page.fill_rect(x, y, size, size)
    page.fill_color(fg)
    page.fill_runs(x + quiet_zone * module, y + size - quiet_zone * module, module,
                   list(dark_runs(matrix)))


def _fit_text(text: str, font: str, size: float, max_width: float) -> tuple[str, float]:
    """*text* and the largest font size up to *size* at which it fits *max_width*
    points; below 4 pt (unreadable) it is cut short with an ellipsis instead, so
    text never runs off its card (and a card at the page edge off the page)."""
    width = text_width(text, font, size)
    if width <= max_width or width == 0:
        return text, size
    size = max(4.0, size * max_width / width)
    if text_width(text, font, size) <= max_width:
        return text, size
    low, high = 0, len(text)  # the longest prefix that fits with the ellipsis
    while low < high:
        middle = (low + high + 1) // 2
        if text_width(text[:middle] + ELLIPSIS, font, size) <= max_width:
            low = middle
        else:
            high = middle - 1
    return (text[:low].rstrip() + ELLIPSIS if low else ""), size


def draw_card(page: PageContent, spec: CardSpec, payload: str, x0: float, y0: float,
              matrix: Sequence[Sequence[bool]] | None = None) -> None:
    """Draw one card whose bottom-left corner is at (x0, y0) points."""
    card_w, card_h = spec.card_width_mm * mm, spec.card_height_mm * mm
    size = spec.qr_size_mm * mm
    margin = min(card_w, card_h) * 0.05
    title_pt = max(6.0, min(20.0, card_h * 0.07))
    line_pt = title_pt * 0.7
    if spec.lines:  # a stack of lines taller than the card is set smaller, not above it
        line_pt = min(line_pt, (card_h - 2 * margin) / (1.25 * len(spec.lines)))

    if spec.qr_x_mm is None:
        qr_x = x0 + (card_w - size) / 2
    else:
        qr_x = x0 + spec.qr_x_mm * mm
    if spec.qr_y_mm is None:
        qr_y = y0 + (card_h - size) / 2
    else:
        qr_y = y0 + spec.qr_y_mm * mm
    if matrix is None:
        matrix = qr_matrix(payload, spec.error_correction)
    draw_qr(page, matrix, qr_x, qr_y, size, spec.fg_color, spec.bg_color, spec.quiet_zone)

    page.fill_color(spec.fg_color)
    centre = x0 + card_w / 2
    usable = card_w - 2 * margin
    if spec.title:
        title, pt = _fit_text(spec.title, FONT_BOLD, title_pt, usable)
        page.centred_text(centre, y0 + card_h - margin - pt, title, FONT_BOLD, pt)
    # The lowest baseline sits a descender's depth (0.25 em) above the margin.
    baseline = y0 + margin + line_pt * (0.25 + 1.25 * (len(spec.lines) - 1))
    for line in spec.lines:
        line, pt = _fit_text(line, FONT, line_pt, usable)
        page.centred_text(centre, baseline, line, FONT, pt)
        baseline -= line_pt * 1.25


def draw_crop_marks(page: PageContent, spec: CardSpec) -> None:
    """Marks in the page margin, outside every card, on the line of each cut: every
    column and row boundary of the grid, its outline included."""
    inset, gap, length = spec.inset_mm * mm, CROP_GAP_MM * mm, CROP_LENGTH_MM * mm
    width, height = spec.page_width_mm * mm, spec.page_height_mm * mm
    segments = []
    for col in range(spec.cols + 1):
        x = inset + col * spec.card_width_mm * mm
        segments += [(x, inset - gap, x, inset - gap - length),
                     (x, height - inset + gap, x, height - inset + gap + length)]
    for row in range(spec.rows + 1):
        y = inset + row * spec.card_height_mm * mm
        segments += [(inset - gap, y, inset - gap - length, y),
                     (width - inset + gap, y, width - inset + gap + length, y)]
    page.stroke_lines(segments, CROP_LINE_PT)


class CardSheets:
    """Cards laid out ``cols x rows`` per page as their spec says, streamed to a PdfStream.

    Cards of one layout fill a page in order; a card of another page size or
    grid starts a new page.
    """

    def __init__(self, pdf: PdfStream) -> None:
        self.pdf = pdf
        self.page = PageContent()
        self.layout: tuple | None = None
        self.slot = 0
        self.cards = 0

    def add(self, spec: CardSpec, payload: str, matrix) -> None:
        layout = (spec.page_width_mm, spec.page_height_mm, spec.cols, spec.rows,
                  spec.margin_mm, spec.crop_marks)
        if layout != self.layout or self.slot == spec.cards_per_page:
            self.flush()
            self.layout = layout
        if self.slot == 0 and spec.crop_marks:
            draw_crop_marks(self.page, spec)
        x, y = spec.card_origin_mm(self.slot)
        draw_card(self.page, spec, payload, x * mm, y * mm, matrix)
        self.slot += 1
        self.cards += 1

    def flush(self) -> None:
        """Write the page being filled, if it has a card."""
        if self.slot:
            width, height = self.layout[0] * mm, self.layout[1] * mm
            self.pdf.add_page(width, height, self.page.take())
            self.slot = 0

    def close(self) -> int:
        """Finish the last page; a PDF without cards gets one blank A4 page. Returns pages."""
        self.flush()
        if not self.pdf.pages:
            self.pdf.add_page(A4_MM[0] * mm, A4_MM[1] * mm, b"")
        self.pdf.close()
        return len(self.pdf.pages)


def write_pdf(spec: CardSpec, payloads: Sequence[str], out: BinaryIO, *,
              progress: Callable[[int, int], None] | None = None,
              title: str = "QR cards") -> tuple[int, int]:
    """Write one card per payload, ``spec.cols x spec.rows`` to a page, to the binary
    file *out*; return ``(pages, cards)``. *progress* is called as
    ``progress(page_done, pages_total)`` after each page."""
    per_page = spec.cards_per_page
    pages = max(1, math.ceil(len(payloads) / per_page))
    # Identical payloads (copies of one code) share one matrix.
    cache: dict[str, list[list[bool]]] = {}
    sheets = CardSheets(PdfStream(out, title))
    for page in range(pages):
        for payload in payloads[page * per_page:(page + 1) * per_page]:
            matrix = cache.get(payload)
            if matrix is None:
                if len(cache) > 64:
                    cache.clear()
                matrix = cache[payload] = qr_matrix(payload, spec.error_correction)
            sheets.add(spec, payload, matrix)
        sheets.flush()
        if progress is not None:
            progress(page + 1, pages)
    sheets.close()
    return pages, len(payloads)


def render_pdf(spec: CardSpec, payloads: Sequence[str], out_path: Path, *,
               progress: Callable[[int, int], None] | None = None,
               title: str = "QR cards") -> RenderResult:
    """:func:`write_pdf` into the file *out_path*, atomically: a reader never sees a
    partial file, and a failed render leaves none."""
    out_path = Path(out_path)
    store = DirectoryStore(out_path.parent, create=True)
    with store.write(out_path.name) as tmp, open(tmp, "wb") as out:
        pages, cards = write_pdf(spec, payloads, out, progress=progress, title=title)
    return RenderResult(out_path, pages, cards, out_path.stat().st_size)
