"""The analytics chart's x-axis labels never overlap: many buckets, long labels, few
buckets, one. Positions are read back from the SVG; widths are estimated generously
here (tests/test_dashboard_browser.py measures them in a real browser)."""

import re
from xml.etree import ElementTree

import pytest

from qrq.analytics.svg import MARGIN, render_chart

SVG = "{http://www.w3.org/2000/svg}"
WIDTH = 960
EM = 0.62  # wider than any sans-serif glyph's average advance


def series(labels):
    return [{"label": label, "scans": i * 7 % 50, "visitors": i % 20}
            for i, label in enumerate(labels)]


def x_labels(svg):
    """``[(left, right, text)]`` of the x-axis labels, by their anchor and estimated width."""
    root = ElementTree.fromstring(svg)
    axis_y = 400 - MARGIN["bottom"] + 18
    found = []
    for text in root.iter(f"{SVG}text"):
        if float(text.get("y")) != axis_y:
            continue
        x, width = float(text.get("x")), len(text.text) * 12 * EM
        anchor = text.get("text-anchor")
        left = x if anchor == "start" else x - width if anchor == "end" else x - width / 2
        found.append((left, left + width, text.text))
    return found


@pytest.mark.parametrize("labels", [
    [f"2026-{m:02d}-{d:02d}" for m in range(1, 13) for d in range(1, 29)],  # 336 days
    [f"2026-W{w:02d} (a long label for week {w})" for w in range(1, 54)],
    [f"a label far longer than the whole chart is wide, number {i} " * 6 for i in range(3)],
    ["2026-11", "2026-12"],
    ["only"],
    [f"{i}" for i in range(1000)],
])
def test_x_labels_never_overlap_and_stay_inside(labels):
    svg = render_chart({"series": series(labels), "params": {"period": "daily"}})
    found = x_labels(svg)
    assert found, "no x label"
    assert found[-1][2].rstrip("…") in labels[-1]  # the last bucket is always named
    if len(labels) > 1:
        assert found[0][2].rstrip("…") in labels[0]
    for (_, right, _), (left, _, _) in zip(found, found[1:], strict=False):
        assert right + 4 <= left, found
    assert all(0 <= left and right <= WIDTH for left, right, _ in found), found


def test_many_short_labels_still_show_several():
    found = x_labels(render_chart({"series": series(
        [f"2026-{m:02d}" for m in range(1, 13)] * 3), "params": {}}))
    assert len(found) >= 6


def test_labels_are_escaped():
    svg = render_chart({"series": series(["<b>&", "x"]), "params": {}})
    assert "&lt;b&gt;&amp;" in svg and not re.search(r"<b>", svg)
