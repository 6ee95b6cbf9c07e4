"""A time-based analytics report drawn as a self-contained SVG line chart.

Server-side and dependency-free: no JavaScript, no fonts or scripts from a CDN, every
text escaped. Scans and unique visitors per bucket share one y axis.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any
from xml.sax.saxutils import escape, quoteattr

SCANS_COLOR = "#1d3557"
VISITORS_COLOR = "#e76f51"
MARGIN = {"left": 72, "right": 24, "top": 56, "bottom": 64}
FONT_SIZE = 12
# An upper bound of a character's advance in the sans-serif fonts a browser may pick,
# in ems (digits and capitals are about 0.55-0.6 em); labels are spaced by it.
CHAR_EM = 0.62
LABEL_GAP = 10  # pixels at least between two x labels


def text_width(text: str, size: float = FONT_SIZE) -> float:
    """A generous estimate of *text*'s width in pixels at *size*."""
    return len(text) * size * CHAR_EM


def _extent(at: float, width: float, anchor: str) -> tuple[float, float]:
    start = at if anchor == "start" else at - width if anchor == "end" else at - width / 2
    return start, start + width


def x_labels(labels: list[str], x: Callable[[int], float],
             plot_w: float) -> list[tuple[int, str, str]]:
    """The x-axis labels to draw, ``[(index, text-anchor, text)]``: evenly spaced, as
    many as fit without overlapping (by :func:`text_width` and :data:`LABEL_GAP`), the
    first and last always among them; a label longer than half the plot is shortened."""
    n = len(labels)
    if not n:
        return []
    limit = max(4, int((plot_w - LABEL_GAP) / 2 / (FONT_SIZE * CHAR_EM)))
    texts = [t if len(t) <= limit else t[:limit - 1] + "\u2026" for t in labels]

    def anchor(i: int) -> str:
        return "middle" if n == 1 else "start" if i == 0 else "end" if i == n - 1 \
            else "middle"

    def apart(a: int, b: int) -> bool:  # label a ends left of label b, with the gap
        return _extent(x(a), text_width(texts[a]), anchor(a))[1] + LABEL_GAP <= \
            _extent(x(b), text_width(texts[b]), anchor(b))[0]

    spacing = plot_w / (n - 1) if n > 1 else plot_w
    step = max(1, math.ceil((max(map(text_width, texts)) + LABEL_GAP) / spacing))
    # The first and the last always (each at most half the plot: they fit together),
    # and between them a label at least every step buckets after the one before that
    # touches neither neighbour.
    kept = [0]
    for i in range(1, n - 1):
        if i - kept[-1] >= step and apart(kept[-1], i) and apart(i, n - 1):
            kept.append(i)
    if n > 1:
        kept.append(n - 1)
    return [(i, anchor(i), texts[i]) for i in kept]


def nice_ceiling(value: float) -> float:
    """The smallest 1, 2, 2.5 or 5 times a power of ten that is >= *value* (at least 1)."""
    if value <= 1:
        return 1
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if step * power >= value:
            return step * power
    return 10 * power


def render_chart(result: dict[str, Any], width: int = 960, height: int = 400) -> str:
    """The SVG document for *result* (as :func:`qrq.analytics.time_series` returns it)."""
    series = result.get("series") or []
    params = result.get("params") or {}
    left, top = MARGIN["left"], MARGIN["top"]
    plot_w = width - left - MARGIN["right"]
    plot_h = height - top - MARGIN["bottom"]
    peak = nice_ceiling(max([p["scans"] for p in series] + [p["visitors"] for p in series]
                            + [0]))

    def x(i: int) -> float:
        return left + (plot_w / 2 if len(series) == 1 else plot_w * i / (len(series) - 1))

    def y(value: float) -> float:
        return top + plot_h - plot_h * value / peak

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label={quoteattr(_title(params))} '
           'font-family="system-ui, sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
           f'<text x="{left}" y="24" font-size="16" font-weight="600" fill="#222">'
           f'{escape(_title(params))}</text>',
           f'<text x="{left}" y="42" fill="#666">{escape(_subtitle(result))}</text>']
    # Horizontal grid lines and y labels.
    for k in range(5):
        value = peak * k / 4
        gy = y(value)
        out.append(f'<line x1="{left}" y1="{gy:.1f}" x2="{left + plot_w}" y2="{gy:.1f}" '
                   f'stroke="{"#999" if k == 0 else "#e5e5e5"}"/>')
        out.append(f'<text x="{left - 8}" y="{gy + 4:.1f}" text-anchor="end" fill="#444">'
                   f'{_number(value)}</text>')
    # X labels: as many as fit side by side without touching, evenly spread, always the
    # last; the first and last align with the plot's edges, not over them.
    for i, anchor, text in x_labels([str(p["label"]) for p in series], x, plot_w):
        out.append(f'<line x1="{x(i):.1f}" y1="{top + plot_h}" x2="{x(i):.1f}" '
                   f'y2="{top + plot_h + 4}" stroke="#999"/>')
        out.append(f'<text x="{x(i):.1f}" y="{top + plot_h + 18}" text-anchor="{anchor}" '
                   f'fill="#444">{escape(text)}</text>')
    if not any(p["scans"] for p in series):
        out.append(f'<text x="{left + plot_w / 2}" y="{top + plot_h / 2}" '
                   'text-anchor="middle" fill="#555" font-size="14">'
                   'no scans in this range</text>')
    for key, color, dash in (("scans", SCANS_COLOR, ""),
                             ("visitors", VISITORS_COLOR, ' stroke-dasharray="6 3"')):
        points = " ".join(f"{x(i):.1f},{y(p[key]):.1f}" for i, p in enumerate(series))
        if key == "scans" and len(series) > 1:
            area = f"{x(0):.1f},{y(0):.1f} {points} {x(len(series) - 1):.1f},{y(0):.1f}"
            out.append(f'<polygon points="{area}" fill="{color}" fill-opacity="0.08"/>')
        if len(series) > 1:
            out.append(f'<polyline points="{points}" fill="none" stroke="{color}" '
                       f'stroke-width="2"{dash}/>')
        if len(series) <= 60:
            for i, p in enumerate(series):
                out.append(f'<circle cx="{x(i):.1f}" cy="{y(p[key]):.1f}" r="3" '
                           f'fill="{color}"><title>{escape(str(p["label"]))}: '
                           f'{p[key]} {key}</title></circle>')
    # Legend.
    lx = left + plot_w - 220
    for n, (label, color, dash) in enumerate((("scans", SCANS_COLOR, ""),
                                              ("unique visitors", VISITORS_COLOR,
                                               ' stroke-dasharray="6 3"'))):
        ly = height - 20
        out.append(f'<line x1="{lx + n * 110}" y1="{ly - 4}" x2="{lx + n * 110 + 24}" '
                   f'y2="{ly - 4}" stroke="{color}" stroke-width="2"{dash}/>')
        out.append(f'<text x="{lx + n * 110 + 30}" y="{ly}" fill="#333">{label}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _title(params: dict[str, Any]) -> str:
    title = (f"Scans and unique visitors, {params.get('period', '')} "
             f"({params.get('tz', 'UTC')}), {params.get('from', '')} to {params.get('to', '')}")
    filters = [f"domain {params['domain']}" if params.get("domain") else "",
               f"template {params['template_id']}" if params.get("template_id") else ""]
    filters = [f for f in filters if f]
    return title + (f"; {', '.join(filters)}" if filters else "")


def _subtitle(result: dict[str, Any]) -> str:
    dbs = result.get("databases") or {}
    text = (f"{result.get('totals', {}).get('scans', 0):,} scans from {dbs.get('read', 0)} of "
            f"{dbs.get('found', 0)} databases")
    if result.get("warnings"):
        text += f"; {len(result['warnings'])} warning(s)"
    if result.get("computed_at"):
        text += f"; computed {result['computed_at']}"
    return text


def _number(value: float) -> str:
    if value >= 1_000_000:
        return f"{value / 1_000_000:g}M"
    if value >= 10_000:
        return f"{value / 1000:g}k"
    return f"{value:g}"
