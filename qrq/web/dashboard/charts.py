"""The overview's charts: stacked bar charts as SVG geometry, drawn by the template."""

from __future__ import annotations

import datetime
from typing import Any

from qrq.queue import huey, jobs, stats


def bar_chart(values: list[tuple[str, list[tuple[str, float]]]], *, label: str,
              percent: bool = False, width: int = 720, height: int = 180) -> dict[str, Any]:
    """Geometry of a stacked bar chart, drawn as SVG by the template (no script).

    *values* holds ``(x label, [(css class, value), ...])`` per bar.
    """
    left, bottom, top = 44, 22, 10
    plot_w, plot_h = width - left - 6, height - bottom - top
    peak = 1.0 if percent else max([sum(v for _, v in stack) for _, stack in values] + [1])
    step = plot_w / max(1, len(values))
    bars, labels = [], []
    for i, (x_label, stack) in enumerate(values):
        x = left + i * step + 1
        y = top + plot_h
        for css, value in stack:
            h = plot_h * value / peak if peak else 0
            y -= h
            if h > 0:
                shown = f"{value * 100:.0f}%" if percent else f"{value:g}"
                bars.append({"x": round(x, 1), "y": round(y, 1), "w": round(step - 2, 1),
                             "h": round(h, 1), "css": css,
                             "title": f"{x_label}: {shown} {css.removeprefix('bar-')}"})
        if i % 6 == 0:
            labels.append({"x": round(x, 1), "text": x_label})
    # Counts of jobs: the middle tick is a whole number, at its own height (none below 2).
    fractions = (0, 0.5, 1) if percent else (0, (peak // 2) / peak, 1) if peak >= 2 \
        else (0, 1)
    ticks = [{"y": round(top + plot_h * (1 - f), 1),
              "text": f"{f * 100:.0f}%" if percent else f"{round(peak * f):g}"}
             for f in fractions]
    return {"width": width, "height": height, "bars": bars, "labels": labels, "ticks": ticks,
            "left": left, "base": top + plot_h, "label": label}


def charts(now: float) -> dict[str, Any]:
    buckets = stats.throughput(huey.storage, now)

    def hour(b):
        return datetime.datetime.fromtimestamp(b["start"], datetime.UTC).strftime("%H:00")

    return {
        "throughput": bar_chart([(hour(b), [("bar-finished", b["finished"]),
                                            ("bar-failed", b["failed"])]) for b in buckets],
                                label="Jobs ended per hour, last 24 h (UTC)"),
        "failure_rate": bar_chart([(hour(b), [("bar-failed", b["failure_rate"] or 0)])
                                   for b in buckets], percent=True,
                                  label="Failure rate per hour, last 24 h (UTC)"),
        "totals": {status: sum(b[status] for b in buckets) for status in jobs.ENDED},
    }
