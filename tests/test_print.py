"""Print safety: nothing printed within the safe margin of a page edge; crop marks."""

import dataclasses
import re
import subprocess
import zlib

import pytest
from PIL import Image

from qrq.cards.generate import prepare
from qrq.cards.options import check_options
from qrq.cards.pdf import PdfStream
from qrq.cards.qr import CardSheets, render_pdf
from qrq.config import Settings
from qrq.demo import DEMO_TEMPLATES
from qrq.errors import ValidationError
from qrq.web import create_app
from tests.test_api import assert_error
from tests.test_batch import run_job

DPI = 100
MARGIN = Settings.print_margin_mm  # the setting's default: 5 mm
PX_MM = 25.4 / DPI


def template(fields):
    """A demo template as ``Template.to_dict()`` spells it."""
    return {"id": 7, "qr_x_mm": None, "qr_y_mm": None, "error_correction": "M",
            "quiet_zone": 4, **fields, "colors": {"fg": "#000000", "bg": "#ffffff",
                                                  **fields.get("colors", {})}}


def page_image(pdf, page, tmp_path):
    prefix = tmp_path / f"p{page}"
    subprocess.run(["pdftoppm", "-r", str(DPI), "-gray", "-png", "-singlefile", "-f",
                    str(page), "-l", str(page), str(pdf), str(prefix)], check=True)
    return Image.open(f"{prefix}.png")


def ink_margins(pdf, page, tmp_path):
    """Distance in mm from each page edge (left, top, right, bottom) to the nearest
    printed (non-white) pixel of *page*."""
    with page_image(pdf, page, tmp_path) as image:
        box = image.point(lambda v: 255 if v < 250 else 0).getbbox()
        width, height = image.size
    assert box is not None, "a blank page"
    left, top, right, bottom = box
    return (left * PX_MM, top * PX_MM, (width - right) * PX_MM, (height - bottom) * PX_MM)


def assert_safe(margins, margin=MARGIN):
    # A pixel is 0.25 mm: one pixel of slack for anti-aliasing at the box's edge.
    assert min(margins) >= margin - PX_MM, f"ink {margins} mm from the edges"


@pytest.mark.parametrize("demo", DEMO_TEMPLATES, ids=lambda d: d["name"])
@pytest.mark.parametrize("crop_marks", [False, True])
def test_every_demo_template_keeps_the_margin(tmp_path, demo, crop_marks):
    # Long text too: it is set smaller, then cut short, never run off the card.
    fields = {**demo, "title": demo["title"] and "W" * 200,
              "lines": [f"line {i} " + "M" * 150 for i in range(10)] if demo["lines"] else []}
    for i, variant in enumerate((demo, fields)):
        spec, payloads = prepare(template(variant), {"copies": 60, "crop_marks": crop_marks},
                                 100, margin_mm=MARGIN)
        result = render_pdf(spec, payloads, tmp_path / f"{i}.pdf")
        assert_safe(ink_margins(result.path, 1, tmp_path))


def test_the_margin_is_the_setting(tmp_path):
    demo = template(DEMO_TEMPLATES[1])  # business cards: 2.9 mm at the bottom before
    for margin in (0, 12):
        spec, payloads = prepare(demo, {"copies": 8}, 10, margin_mm=margin)
        result = render_pdf(spec, payloads, tmp_path / f"{margin}.pdf")
        margins = ink_margins(result.path, 1, tmp_path)
        assert_safe(margins, margin)
        assert min(margins) < margin + 5  # the cards fill the page inside the margin
    assert spec.card_width_mm == (210 - 24) / 2


def test_batch_sheets_of_mixed_layouts_keep_the_margin(tmp_path):
    out = tmp_path / "batch.pdf"
    with open(out, "wb") as fh:
        sheets = CardSheets(PdfStream(fh))
        for demo in DEMO_TEMPLATES:
            for crop_marks in (False, True):
                spec, payloads = prepare(template(demo), {"copies": 3, "crop_marks": crop_marks},
                                         10, margin_mm=MARGIN)
                for payload in payloads:
                    sheets.add(spec, payload, None)
        pages = sheets.close()
    # A change of layout starts a page: 2 x 3 pages of table tents (1x1), 2 x 1 of the rest.
    assert pages == 6 + 2 * (len(DEMO_TEMPLATES) - 1)
    for page in range(1, pages + 1):
        assert_safe(ink_margins(out, page, tmp_path))


def crop_segments(pdf_bytes):
    """The crop marks' line segments ``(x1, y1, x2, y2)`` in mm, from the content."""
    content = b"".join(zlib.decompress(m) for m in re.findall(
        rb"stream\n(.*?)\nendstream", pdf_bytes, re.S))
    marks = re.search(rb"q 0 G [\d.]+ w\n(.*?)\nS Q", content, re.S)
    if marks is None:
        return []
    return [tuple(float(v) * 25.4 / 72 for v in (x1, y1, x2, y2)) for x1, y1, x2, y2 in
            re.findall(rb"([\d.]+) ([\d.]+) m ([\d.]+) ([\d.]+) l", marks[1])]


@pytest.mark.parametrize("demo", DEMO_TEMPLATES, ids=lambda d: d["name"])
def test_crop_marks_on_every_cut_line_outside_every_card(tmp_path, demo):
    spec, payloads = prepare(template(demo), {"copies": 1}, 10, margin_mm=MARGIN)
    plain = render_pdf(spec, payloads, tmp_path / "plain.pdf")
    assert crop_segments(plain.path.read_bytes()) == []  # only when asked

    spec, payloads = prepare(template(demo), {"copies": 1, "crop_marks": True}, 10,
                             margin_mm=MARGIN)
    result = render_pdf(spec, payloads, tmp_path / "marks.pdf")
    segments = crop_segments(result.path.read_bytes())
    assert len(segments) == 2 * (spec.cols + 1) + 2 * (spec.rows + 1)
    cards = [(x, y, x + spec.card_width_mm, y + spec.card_height_mm)
             for x, y in map(spec.card_origin_mm, range(spec.cards_per_page))]
    cuts_x = {round(x, 2) for x0, _, x1, _ in cards for x in (x0, x1)}
    cuts_y = {round(y, 2) for _, y0, _, y1 in cards for y in (y0, y1)}
    for x1, y1, x2, y2 in segments:
        assert round(x1, 2) in cuts_x or round(y1, 2) in cuts_y  # on a cut line
        for x, y in ((x1, y1), (x2, y2)):
            assert MARGIN - 0.01 <= x <= spec.page_width_mm - MARGIN + 0.01
            assert MARGIN - 0.01 <= y <= spec.page_height_mm - MARGIN + 0.01
        for left, bottom, right, top in cards:  # clear of every card by the gap
            assert (max(x1, x2) < left - 1 or min(x1, x2) > right + 1
                    or max(y1, y2) < bottom - 1 or min(y1, y2) > top + 1)
    # And they print: ink in the band between the margin and the cards' trim box.
    assert_safe(ink_margins(result.path, 1, tmp_path))
    assert max(ink_margins(result.path, 1, tmp_path)) < spec.inset_mm - 1


@pytest.mark.parametrize("fields, options, field, message", [
    # A code that fitted the whole 85x55 page does not fit inside the margin: refused,
    # never shrunk (a print customer ordered that size).
    ({"page_size": "85x55", "grid": "1x1"}, {"size_mm": 50}, "options.size_mm",
     "at most 45 mm"),
    ({"page_size": "85x55", "grid": "1x1", "qr_size_mm": 45}, {"crop_marks": True},
     "size_mm", "at most 33 mm"),
    ({}, {"qr_x_mm": 80}, "options.qr_x_mm", "at most 60 mm"),
    ({"qr_y_mm": 40}, {}, "qr_y_mm", "at most 31.7 mm"),
])
def test_a_layout_that_does_not_fit_the_margin_is_a_422_naming_the_field(
        fields, options, field, message):
    demo = template({**DEMO_TEMPLATES[1], **fields})  # A4 2x4 cards, 40 mm codes
    with pytest.raises(ValidationError) as caught:
        prepare(demo, options, 10, margin_mm=MARGIN)
    assert (caught.value.field, caught.value.status) == (field, 422)
    assert message in caught.value.message
    assert re.search(r"inside a (5|11) mm page margin", caught.value.message)


def test_the_limit_a_refusal_states_is_accepted():
    demo = template(DEMO_TEMPLATES[1])
    prepare(demo, {"qr_x_mm": 60, "qr_y_mm": 31.7}, 10, margin_mm=MARGIN)


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_crop_marks_must_be_a_boolean(value):
    with pytest.raises(ValidationError) as caught:
        check_options({"crop_marks": value}, 10)
    assert caught.value.field == "options.crop_marks"


# -- through the API and real storage ----------------------------------------------------

def test_pdf_jobs_and_batches_print_inside_the_margin_with_crop_marks(client, templates,
                                                                       alice, tmp_path):
    pdf = client.post("/api/generate-qr-pdf", headers=alice[1], json={
        "template_id": 2, "options": {"copies": 8, "crop_marks": True}}).get_json()
    batch = client.post("/api/batch/generate-qrs", headers=alice[1], json={
        "template_ids": [2, 3], "options": {"copies": 2, "crop_marks": True}}).get_json()
    for job_id, url in ((pdf["job_id"], f"/api/jobs/{pdf['job_id']}/download"),
                        (batch["batch_job_id"],
                         f"/api/batch/{batch['batch_job_id']}/download/pdf")):
        assert run_job(job_id)["status"] == "finished"
        with client.get(url, headers=alice[1]) as response:
            out = tmp_path / f"{job_id}.pdf"
            out.write_bytes(response.data)
        assert crop_segments(out.read_bytes())
        for page in (1, 2) if job_id == batch["batch_job_id"] else (1,):
            assert_safe(ink_margins(out, page, tmp_path))


def test_the_margin_setting_reaches_the_api(settings, templates, alice):
    wide = create_app({"SETTINGS": dataclasses.replace(settings, print_margin_mm=50),
                       "TESTING": True}).test_client()
    # The table tent's 120 mm code no longer fits an A4 page inside 50 mm margins.
    response = wide.post("/api/generate-qr-pdf", headers=alice[1],
                         json={"template_id": 1, "options": {}})
    assert_error(response, 422, "size_mm")
    assert "at most 110 mm" in response.get_json()["error"]["message"]
    assert_error(wide.post("/api/batch/generate-qrs", headers=alice[1],
                           json={"template_ids": [1]}), 422, "size_mm")
