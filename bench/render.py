"""Rendering speed and size of qrq's vector QR PDFs against a naive raster baseline.

Two workloads, each rendered by both renderers in the same run, alternating:

* ``1x1``: one code per A4 page (the demo "table tent" layout), one distinct payload per page;
* ``2x4``: eight codes per A4 page (the demo "business cards" layout), all distinct.

qrq is :func:`qrq.cards.qr.render_pdf` with a :class:`~qrq.cards.qr.CardSpec`. The baseline
is what a first implementation usually does: ``qrcode`` makes a PIL image per code, saved as PNG,
placed with reportlab's ``canvas.drawImage(ImageReader(...))`` at the same position and size,
with the same title and text lines. Both write their PDF to a file in a temporary directory.

Afterwards a sample of pages of each qrq PDF is rasterised with poppler (``pdftoppm -r 150``)
and decoded with zxing-cpp; the decoded texts must equal the payloads placed on that page.

Run: ``/work/venv/bin/python bench/render.py`` (``--help`` for the knobs). The last line of
output is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import qrcode
from _support import load_average
from PIL import Image
from reportlab.lib.units import mm
from reportlab.lib.utils import ImageReader
from reportlab.pdfgen.canvas import Canvas

from qrq.cards.qr import ERROR_CORRECTION, FONT, FONT_BOLD, CardSpec, render_pdf

A4 = (210.0, 297.0)
TARGET_RATIO = 5.0


def workloads(single_pages: int, grid_pages: int) -> dict[str, tuple[CardSpec, list[str]]]:
    """The two layouts of the demo templates, with one distinct payload per card."""
    single = CardSpec(page_width_mm=A4[0], page_height_mm=A4[1], cols=1, rows=1,
                      qr_size_mm=120, title="Scan for the menu",
                      lines=("Order and pay from your table",))
    grid = CardSpec(page_width_mm=A4[0], page_height_mm=A4[1], cols=2, rows=4,
                    qr_size_mm=40, title="Jane Example",
                    lines=("Head of Printing", "jane@qrcards.example"))
    return {
        "1x1": (single, [f"https://menu.qrcards.example/t/1/table/{i}"
                         for i in range(1, single_pages + 1)]),
        "2x4": (grid, [f"https://cards.qrcards.example/c/2/{i}"
                       for i in range(1, grid_pages * 8 + 1)]),
    }


# -- the naive baseline -------------------------------------------------------------------

def _centred_text(canvas: Canvas, text: str, font: str, size: float, centre: float,
                  y: float, max_width: float) -> None:
    width = canvas.stringWidth(text, font, size)
    if width > max_width:
        size = max(4.0, size * max_width / width)
    canvas.setFont(font, size)
    canvas.drawCentredString(centre, y, text)


def naive_render(spec: CardSpec, payloads: list[str], out_path: Path) -> int:
    """qrcode -> PIL PNG per code -> drawImage, at qrq's layout; returns the page count."""
    page_w, page_h = spec.page_width_mm * mm, spec.page_height_mm * mm
    card_w, card_h = spec.card_width_mm * mm, spec.card_height_mm * mm
    size = spec.qr_size_mm * mm
    margin = min(card_w, card_h) * 0.05
    title_pt = max(6.0, min(20.0, card_h * 0.07))
    line_pt = title_pt * 0.7
    per_page = spec.cards_per_page
    canvas = Canvas(str(out_path), pagesize=(page_w, page_h), pageCompression=1)
    pages = 0
    for start in range(0, len(payloads), per_page):
        for slot, payload in enumerate(payloads[start:start + per_page]):
            x0 = (slot % spec.cols) * card_w
            y0 = page_h - (slot // spec.cols + 1) * card_h
            code = qrcode.QRCode(error_correction=ERROR_CORRECTION[spec.error_correction],
                                 border=spec.quiet_zone)
            code.add_data(payload)
            code.make(fit=True)
            image = code.make_image(fill_color=spec.fg_color, back_color=spec.bg_color)
            png = io.BytesIO()
            image.save(png, format="PNG")
            png.seek(0)
            canvas.drawImage(ImageReader(png), x0 + (card_w - size) / 2,
                             y0 + (card_h - size) / 2, size, size)
            canvas.setFillColor(spec.fg_color)
            centre, usable = x0 + card_w / 2, card_w - 2 * margin
            if spec.title:
                _centred_text(canvas, spec.title, FONT_BOLD, title_pt, centre,
                              y0 + card_h - margin - title_pt, usable)
            baseline = y0 + margin + line_pt * 1.25 * (len(spec.lines) - 1)
            for line in spec.lines:
                _centred_text(canvas, line, FONT, line_pt, centre, baseline, usable)
                baseline -= line_pt * 1.25
        canvas.showPage()
        pages += 1
    canvas.save()
    return pages


# -- measurement ----------------------------------------------------------------------------

def timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def sample_pages(pages: int, count: int) -> list[int]:
    """*count* page numbers (1-based) spread evenly from the first page to the last."""
    if count >= pages:
        return list(range(1, pages + 1))
    if count == 1:
        return [1]
    return sorted({1 + round(i * (pages - 1) / (count - 1)) for i in range(count)})


def decode_page(pdf: Path, page: int, workdir: Path, dpi: int = 150) -> list[str]:
    import zxingcpp

    prefix = workdir / f"{pdf.stem}-p{page}"
    subprocess.run(["pdftoppm", "-r", str(dpi), "-png", "-f", str(page), "-l", str(page),
                    "-singlefile", str(pdf), str(prefix)], check=True)
    png = prefix.with_suffix(".png")
    with Image.open(png) as image:
        texts = [b.text for b in zxingcpp.read_barcodes(image)]
    png.unlink()
    return texts


def check_decodable(pdf: Path, spec: CardSpec, payloads: list[str], count: int,
                    workdir: Path) -> dict:
    per_page = spec.cards_per_page
    pages = -(-len(payloads) // per_page)
    checked, bad = [], []
    for page in sample_pages(pages, count):
        expected = payloads[(page - 1) * per_page:page * per_page]
        found = decode_page(pdf, page, workdir)
        checked.append(page)
        if Counter(found) != Counter(expected):
            bad.append({"page": page, "expected": expected, "decoded": found})
    return {"pages_checked": checked, "codes_checked": len(checked) * per_page,
            "all_decodable": not bad, "failures": bad}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs of each measurement")
    parser.add_argument("--single-pages", type=int, default=200, help="pages of the 1x1 case")
    parser.add_argument("--grid-pages", type=int, default=100, help="pages of the 2x4 case")
    parser.add_argument("--sample", type=int, default=5,
                        help="pages of each PDF to rasterise and decode")
    parser.add_argument("--keep", action="store_true", help="keep the PDFs; print their dir")
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="qrq-bench-render-"))
    load_start = load_average()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}, load average {load_start}; repeats={args.repeats}; "
          f"files in {workdir}")
    results: dict[str, dict] = {}
    try:
        for name, (spec, payloads) in workloads(args.single_pages, args.grid_pages).items():
            qrq_pdf, naive_pdf = workdir / f"qrq-{name}.pdf", workdir / f"naive-{name}.pdf"
            pages = -(-len(payloads) // spec.cards_per_page)
            # Warm both paths (imports, font metrics) outside the timed runs.
            render_pdf(spec, payloads[:spec.cards_per_page], workdir / "warm.pdf")
            naive_render(spec, payloads[:spec.cards_per_page], workdir / "warm.pdf")
            qrq_times, naive_times = [], []
            for i in range(args.repeats):
                # Alternate the order so drift on a noisy machine hits both sides alike.
                runs = [(render_pdf, qrq_pdf, qrq_times),
                        (naive_render, naive_pdf, naive_times)]
                for fn, out, sink in (runs if i % 2 == 0 else runs[::-1]):
                    sink.append(timed(fn, spec, payloads, out))
            qrq_s, naive_s = statistics.median(qrq_times), statistics.median(naive_times)
            case = {
                "pages": pages, "codes": len(payloads),
                "qrq": {"seconds": qrq_times, "median_s": qrq_s, "pages_per_s": pages / qrq_s,
                        "bytes_per_page": qrq_pdf.stat().st_size / pages},
                "naive": {"seconds": naive_times, "median_s": naive_s,
                          "pages_per_s": pages / naive_s,
                          "bytes_per_page": naive_pdf.stat().st_size / pages},
            }
            case["speed_ratio"] = naive_s / qrq_s
            case["size_ratio"] = case["qrq"]["bytes_per_page"] / case["naive"]["bytes_per_page"]
            case["decode"] = check_decodable(qrq_pdf, spec, payloads, args.sample, workdir)
            case["decode_naive"] = check_decodable(naive_pdf, spec, payloads, 2, workdir)
            results[name] = case

            print(f"\n{name}: {pages} pages, {len(payloads)} distinct codes "
                  f"(median of {args.repeats})")
            for side in ("qrq", "naive"):
                r = case[side]
                print(f"  {side:<6} {r['pages_per_s']:8.1f} pages/s  {r['median_s']:6.2f} s  "
                      f"{r['bytes_per_page'] / 1024:7.1f} KiB/page   runs: "
                      + ", ".join(f"{t:.2f}" for t in r["seconds"]))
            print(f"  qrq/naive speed: {case['speed_ratio']:.2f}x   "
                  f"size: {case['size_ratio']:.2f}x of naive")
            dec = case["decode"]
            print(f"  decode (pdftoppm -r 150 + zxing-cpp): qrq pages {dec['pages_checked']}, "
                  f"{dec['codes_checked']} codes: "
                  + ("every sampled page decodable" if dec["all_decodable"]
                     else f"FAILED on {[f['page'] for f in dec['failures']]}")
                  + f"; naive pages {case['decode_naive']['pages_checked']}: "
                  + ("decodable" if case["decode_naive"]["all_decodable"] else "FAILED"))
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    load_end = load_average()
    print(f"\nload average at the end: {load_end}")
    speed_met = all(c["speed_ratio"] >= TARGET_RATIO for c in results.values())
    decodable = all(c["decode"]["all_decodable"] for c in results.values())
    print(f"\ntarget: qrq >= {TARGET_RATIO:g}x naive pages/s: "
          + ("met" if speed_met else "NOT met")
          + " (" + ", ".join(f"{n} {c['speed_ratio']:.2f}x" for n, c in results.items()) + "); "
          + ("every sampled page decodable" if decodable else "some sampled page NOT decodable"))
    summary = {
        "bench": "render", "cpus": os.cpu_count(), "load_average": [load_start, load_end],
        "repeats": args.repeats,
        "target_speed_ratio": TARGET_RATIO, "speed_target_met": speed_met,
        "every_sampled_page_decodable": decodable,
        "cases": {n: {"pages": c["pages"], "codes": c["codes"],
                      "qrq_pages_per_s": round(c["qrq"]["pages_per_s"], 2),
                      "naive_pages_per_s": round(c["naive"]["pages_per_s"], 2),
                      "speed_ratio": round(c["speed_ratio"], 3),
                      "qrq_bytes_per_page": round(c["qrq"]["bytes_per_page"]),
                      "naive_bytes_per_page": round(c["naive"]["bytes_per_page"]),
                      "size_ratio": round(c["size_ratio"], 3),
                      "qrq_runs_s": [round(t, 3) for t in c["qrq"]["seconds"]],
                      "naive_runs_s": [round(t, 3) for t in c["naive"]["seconds"]],
                      "decoded_pages": c["decode"]["pages_checked"],
                      "decodable": c["decode"]["all_decodable"]}
                  for n, c in results.items()},
    }
    print(json.dumps(summary))
    return 0 if decodable else 1


if __name__ == "__main__":
    sys.exit(main())
