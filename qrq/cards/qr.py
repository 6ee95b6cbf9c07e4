"""QR codes drawn as vector paths onto PDF pages (pure: no Flask, Huey or database).

Each code is built from the qrcode matrix and drawn as filled rectangles, one
per horizontal run of dark modules, so it stays crisp at any zoom, adds a few
kilobytes per code and needs no raster image. Text is drawn with
``drawString``, which never interprets markup, so user text appears as typed.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from reportlab.lib.colors import HexColor
from reportlab.lib.units import mm
from reportlab.pdfgen.canvas import Canvas

from qrq.cards.encoder import ERROR_CORRECTION, DataTooLong, check_fits, qr_matrix  # noqa: F401

_DARK = re.compile(rb"\x01+")
FONT = "Helvetica"
FONT_BOLD = "Helvetica-Bold"


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

    @property
    def cards_per_page(self) -> int:
        return self.cols * self.rows

    @property
    def card_width_mm(self) -> float:
        return self.page_width_mm / self.cols

    @property
    def card_height_mm(self) -> float:
        return self.page_height_mm / self.rows


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


def draw_qr(canvas: Canvas, matrix: Sequence[Sequence[bool]], x: float, y: float,
            size: float, fg: str, bg: str, quiet_zone: int) -> None:
    """Draw *matrix* with its quiet zone as a *size*-point square at (x, y), bottom-left."""
    n = len(matrix)
    module = size / (n + 2 * quiet_zone)
    canvas.setFillColor(HexColor(bg))
    canvas.rect(x, y, size, size, stroke=0, fill=1)
    # Draw in module units (origin at the top-left module, y downwards): every
    # coordinate is a small integer, short to write and exact.
    canvas.saveState()
    canvas.translate(x + quiet_zone * module, y + size - quiet_zone * module)
    canvas.scale(module, -module)
    path = canvas.beginPath()
    for r, c, length in dark_runs(matrix):
        path.rect(c, r, length, 1)
    canvas.setFillColor(HexColor(fg))
    canvas.drawPath(path, stroke=0, fill=1)
    canvas.restoreState()


def _fit_font(canvas: Canvas, text: str, font: str, size: float, max_width: float) -> float:
    """The largest font size up to *size* at which *text* fits *max_width* points."""
    width = canvas.stringWidth(text, font, size)
    if width <= max_width or width == 0:
        return size
    return max(4.0, size * max_width / width)


def draw_card(canvas: Canvas, spec: CardSpec, payload: str, x0: float, y0: float,
              matrix: Sequence[Sequence[bool]] | None = None) -> None:
    """Draw one card whose bottom-left corner is at (x0, y0) points."""
    card_w, card_h = spec.card_width_mm * mm, spec.card_height_mm * mm
    size = spec.qr_size_mm * mm
    margin = min(card_w, card_h) * 0.05
    title_pt = max(6.0, min(20.0, card_h * 0.07))
    line_pt = title_pt * 0.7

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
    draw_qr(canvas, matrix, qr_x, qr_y, size, spec.fg_color, spec.bg_color, spec.quiet_zone)

    canvas.setFillColor(HexColor(spec.fg_color))
    centre = x0 + card_w / 2
    usable = card_w - 2 * margin
    if spec.title:
        pt = _fit_font(canvas, spec.title, FONT_BOLD, title_pt, usable)
        canvas.setFont(FONT_BOLD, pt)
        canvas.drawCentredString(centre, y0 + card_h - margin - pt, spec.title)
    baseline = y0 + margin + line_pt * 1.25 * (len(spec.lines) - 1)
    for line in spec.lines:
        pt = _fit_font(canvas, line, FONT, line_pt, usable)
        canvas.setFont(FONT, pt)
        canvas.drawCentredString(centre, baseline, line)
        baseline -= line_pt * 1.25


def replace_atomically(tmp: Path, final: Path) -> None:
    """Flush *tmp* to disk, then rename it over *final*: after a crash *final* is the
    whole new file or the old one, never an empty one whose job says finished."""
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, final)


def render_pdf(spec: CardSpec, payloads: Sequence[str], out_path: Path, *,
               progress: Callable[[int, int], None] | None = None,
               title: str = "QR cards") -> RenderResult:
    """Render one card per payload, ``spec.cols x spec.rows`` to a page, into *out_path*.

    The PDF is written to a temporary file beside *out_path* and renamed into
    place, so a reader never sees a partial file. *progress* is called as
    ``progress(page_done, pages_total)`` after each page.
    """
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    per_page = spec.cards_per_page
    pages = max(1, math.ceil(len(payloads) / per_page))
    tmp = out_path.with_name(f".{out_path.name}.{os.getpid()}.tmp")
    page_w, page_h = spec.page_width_mm * mm, spec.page_height_mm * mm
    card_w, card_h = spec.card_width_mm * mm, spec.card_height_mm * mm
    canvas = Canvas(str(tmp), pagesize=(page_w, page_h), pageCompression=1)
    canvas.setTitle(title)
    canvas.setCreator("qrq")
    # Identical payloads (copies of one code) share one matrix.
    cache: dict[str, list[list[bool]]] = {}
    try:
        for page in range(pages):
            for slot, payload in enumerate(payloads[page * per_page:(page + 1) * per_page]):
                col, row = slot % spec.cols, slot // spec.cols
                matrix = cache.get(payload)
                if matrix is None:
                    if len(cache) > 64:
                        cache.clear()
                    matrix = cache[payload] = qr_matrix(payload, spec.error_correction)
                draw_card(canvas, spec, payload, col * card_w,
                          page_h - (row + 1) * card_h, matrix)
            canvas.showPage()
            if progress is not None:
                progress(page + 1, pages)
        canvas.save()
        replace_atomically(tmp, out_path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return RenderResult(out_path, pages, len(payloads), out_path.stat().st_size)
