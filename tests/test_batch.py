"""Bulk generation in one process: the renderer, request checks, the API, and
batches run through real storage (enqueue, dequeue, execute)."""

import csv
import dataclasses
import io
import json
import re
import zipfile

import pypdf
import pytest
import zxingcpp
from PIL import Image, ImageDraw

from qrq import batch
from qrq.batch import run as batch_run
from qrq.cards.images import matrix_png, matrix_svg, pack_matrix, unpack_matrix
from qrq.cards.pdf import PdfStream
from qrq.cards.qr import CardSheets, CardSpec, qr_matrix
from qrq.errors import PayloadTooLarge, ValidationError
from qrq.queue import huey, jobs
from tests.conftest import wait_until
from tests.test_api import assert_error
from tests.test_qr import decode_page

URL = "/api/batch/generate-qrs"
TEMPLATE_4 = "https://shop.qrcards.example/p/{}"  # the demo sticker template's payloads


def svg_decode(svg: str) -> list[str]:
    """Rasterise one of our SVGs (a viewBox and one path of unit rectangles) and decode it."""
    side = int(re.search(r'viewBox="0 0 (\d+) \1"', svg)[1])
    scale = 8
    image = Image.new("L", (side * scale, side * scale), 255)
    draw = ImageDraw.Draw(image)
    for x, y, n in re.findall(r"M(\d+) (\d+)h(\d+)v1h-\3z", svg):
        x, y, n = int(x), int(y), int(n)
        draw.rectangle([x * scale, y * scale, (x + n) * scale - 1, (y + 1) * scale - 1], fill=0)
    return [r.text for r in zxingcpp.read_barcodes(image)]


def run_job(job_id):
    """Dequeue and run jobs from the real storage, here, until *job_id* has ended
    (a finished batch queues its mail job, which runs first: it has priority)."""
    while jobs.get(huey.storage, job_id)["status"] not in jobs.ENDED:
        task = huey.dequeue()
        assert task is not None, "nothing queued"
        huey.execute(task)
    return jobs.get(huey.storage, job_id)


def submit(client, headers, body):
    response = client.post(URL, json=body, headers=headers)
    assert response.status_code == 202, response.get_json()
    return response.get_json()


# -- rendering ---------------------------------------------------------------------------

def test_packed_matrix_round_trips():
    matrix = qr_matrix("https://qrcards.example/c/1")
    assert unpack_matrix(pack_matrix(matrix)) == matrix


def test_streamed_pdf_decodes_and_prints_text_literally(tmp_path):
    spec = CardSpec(210, 297, cols=2, rows=2, qr_size_mm=60, title="<b>Café</b> (1)",
                    fg_color="#1d3557")
    payloads = [f"https://qrcards.example/c/{i}" for i in range(1, 7)]
    out = tmp_path / "cards.pdf"
    with open(out, "wb") as fh:
        sheets = CardSheets(PdfStream(fh, title="Batch"))
        for payload in payloads:
            sheets.add(spec, payload, qr_matrix(payload))
        wide = CardSpec(297, 210, qr_size_mm=100)  # another layout starts a new page
        sheets.add(wide, "https://qrcards.example/wide", qr_matrix("https://qrcards.example/wide"))
        assert sheets.close() == 3
    reader = pypdf.PdfReader(out)
    assert len(reader.pages) == 3
    assert round(float(reader.pages[2].mediabox.width) / 72 * 25.4) == 297
    assert "<b>Café</b> (1)" in reader.pages[0].extract_text()
    assert reader.metadata.title == "Batch"
    assert decode_page(out, 1, tmp_path) == sorted(payloads[:4])
    assert decode_page(out, 2, tmp_path) == sorted(payloads[4:6])
    assert decode_page(out, 3, tmp_path) == ["https://qrcards.example/wide"]


def test_svg_of_a_matrix_decodes():
    svg = matrix_svg(qr_matrix("WIFI:S:Café;T:WPA;P:x<y>;;", "H"), 4, title="a<b")
    assert svg.startswith("<svg") and "<title>a&lt;b</title>" in svg
    assert svg_decode(svg) == ["WIFI:S:Café;T:WPA;P:x<y>;;"]


def test_png_of_a_matrix_decodes_in_its_colours_at_the_asked_size():
    matrix = qr_matrix("https://menu.example/t/1", "M")  # 25 modules + 2 x 4 quiet
    png = matrix_png(matrix, 4, "#112233", "#ffeedd", size_mm=30, dpi=300)
    image = Image.open(io.BytesIO(png))
    # 30 mm at 300 dpi is 354 px; whole pixels per module: 33 x 11 = 363 px.
    assert image.format == "PNG" and image.size == (363, 363)
    assert round(image.info["dpi"][0]) == 300
    rgb = image.convert("RGB")
    assert rgb.getpixel((0, 0)) == (0xff, 0xee, 0xdd)  # the quiet zone
    assert rgb.getpixel((4 * 11, 4 * 11)) == (0x11, 0x22, 0x33)  # a finder pattern's corner
    assert [r.text for r in zxingcpp.read_barcodes(image)] == ["https://menu.example/t/1"]
    assert Image.open(io.BytesIO(matrix_png(matrix))).size == (330, 330)  # 10 px a module


@pytest.mark.parametrize(("quiet_zone", "size_mm"), [(4, 30), (0, None), (1, 7), (2, 55.5)])
def test_png_pixels_are_the_matrix_scaled(quiet_zone, size_mm):
    """Pixel for pixel what Pillow draws from the same matrix, scaled by whole pixels."""
    matrix = qr_matrix("https://menu.example/t/2", "Q")
    image = Image.open(io.BytesIO(matrix_png(matrix, quiet_zone, "#000000", "#ffffff",
                                             size_mm)))
    side = len(matrix) + 2 * quiet_zone
    scale = image.size[0] // side
    assert image.size == (side * scale, side * scale) and scale >= 1
    dark = {(r + quiet_zone, c + quiet_zone) for r, row in enumerate(matrix)
            for c, module in enumerate(row) if module}
    expected = Image.new("L", (side, side), 255)
    expected.putdata([0 if (y, x) in dark else 255 for y in range(side) for x in range(side)])
    expected = expected.resize(image.size, Image.Resampling.NEAREST)
    assert image.convert("L").tobytes() == expected.tobytes()


# -- checking requests -------------------------------------------------------------------

def fake_templates(ids):
    base = {"name": "t", "domain": "d.example", "payload": "https://{domain}/{template_id}/{copy}",
            "title": "", "lines": [], "page_size": "A4", "grid": "2x2", "qr_size_mm": 40,
            "qr_x_mm": None, "qr_y_mm": None, "colors": {"fg": "#000000", "bg": "#ffffff"},
            "error_correction": "M", "quiet_zone": 4}
    return {i: {**base, "id": i} for i in ids if i < 100}


def test_template_ids_times_copies_make_numbered_payloads():
    checked = batch.parse_request({"template_ids": [1, 2], "options": {"copies": 3}},
                                  fake_templates, "job", 10, margin_mm=5)
    assert [(t, p) for t, p, _, _ in checked.items] == [
        (1, "https://d.example/1/1"), (1, "https://d.example/1/2"), (1, "https://d.example/1/3"),
        (2, "https://d.example/2/1"), (2, "https://d.example/2/2"), (2, "https://d.example/2/3")]
    with pytest.raises(PayloadTooLarge):
        batch.parse_request({"template_ids": [1, 2], "options": {"copies": 6}},
                            fake_templates, "job", 10, margin_mm=5)


@pytest.mark.parametrize(("body", "field"), [
    ({"items": [{"template_id": 1}, {"template_id": 1, "data": 5}]}, "items[1].data"),
    ({"items": [{"template_id": 1}, "x"]}, "items[1]"),
    ({"items": [{"template_id": 1}, {"data": "x"}]}, "items[1].template_id"),
    ({"items": [{"template_id": 1}] * 3 + [{"template_id": 500}]}, "items[3].template_id"),
    ({"items": [{"template_id": 1, "colour": "red"}]}, "items[0].colour"),
    ({"items": [{"template_id": 1, "data": ""}]}, "items[0].data"),
    ({"items": [{"template_id": 1, "data": "a\x00b"}]}, "items[0].data"),
    ({"items": [{"template_id": 1, "title": 7}]}, "items[0].title"),
    ({"items": []}, "items"),
    ({"template_ids": [1, "2"]}, "template_ids[1]"),
    ({"template_ids": [1, 999]}, "template_ids[1]"),
    ({"template_ids": [1], "items": []}, "items"),
    ({"template_ids": [1], "options": {"grid": "0x0"}}, "options.grid"),
    ({"template_ids": [1], "options": {"copies": 0}}, "options.copies"),
    ({"template_ids": [1], "options": {"data": "{nope}"}}, "options.data"),
    ({"items": [{"template_id": 1}], "options": {"copies": 2}}, "options.copies"),
    ({"template_ids": [1], "extra": 1}, "extra"),
    ({"template_ids": [1], "options": {"formats": "png"}}, "options.formats"),
    ({"template_ids": [1], "options": {"formats": []}}, "options.formats"),
    ({"template_ids": [1], "options": {"formats": ["svg", "svg"]}}, "options.formats"),
    ({"template_ids": [1], "options": {"formats": ["jpeg"]}}, "options.formats"),
    ({"template_ids": [1], "options": {"formats": [["png"]]}}, "options.formats"),
    ({"items": [{"template_id": 1}] * 3 + [{"template_id": 1, "title": "\ud800"}]},
     "items[3].title"),
    ({"items": [{"template_id": 1, "data": "https://x.example/\udc80"}]}, "items[0].data"),
    ({"items": [{"template_id": 1, "lines": ["a", "b\ud800c"]}]}, "items[0].lines[1]"),
    ({"items": [{"template_id": 1, "title": "Zoë Łódź 東京"}]}, "items[0].title"),
    ({"template_ids": [1], "options": {"data": "\ud800{copy}"}}, "options.data"),
    ({"template_ids": [1], "options": {"title": "\ud800"}}, "options.title"),
])
def test_malformed_requests_name_the_field(body, field):
    with pytest.raises(ValidationError) as raised:
        batch.parse_request(body, fake_templates, "job", 10, margin_mm=5)
    assert raised.value.field == field


def test_item_data_is_literal_and_may_hold_newlines():
    vcard = "BEGIN:VCARD\nFN:{copy}\nEND:VCARD"
    checked = batch.parse_request({"items": [{"template_id": 1, "data": vcard},
                                             {"template_id": 2}]}, fake_templates, "j", 10,
                                  margin_mm=5)
    assert checked.items[0][1] == vcard
    assert checked.items[1][1] == "https://d.example/2/2"  # {copy} is the item's number


# -- the API and real storage ------------------------------------------------------------

def test_submit_answers_202_and_status_shows_counts(client, templates, alice):
    body = submit(client, alice[1], {"template_ids": [4], "options": {"copies": 30}})
    assert set(body) >= {"batch_job_id", "total_items", "status"}
    assert body["total_items"] == 30 and body["status"] == "queued"
    job_id = body["batch_job_id"]
    status = client.get(f"/api/job-status/{job_id}", headers=alice[1]).get_json()
    assert status["type"] == "batch" and status["status"] == "queued"
    assert (status["completed"], status["failed"], status["total"]) == (0, 0, 30)
    assert huey.storage.queue_size() == 1  # nothing ran in the request

    job = run_job(job_id)
    assert job["status"] == "finished", job["error"]
    status = client.get(f"/api/job-status/{job_id}", headers=alice[1]).get_json()
    assert (status["completed"], status["failed"], status["total"]) == (30, 0, 30)
    assert status["progress"] == 100
    result = status["result"]
    assert result["pdf"]["cards"] == 30 and result["pdf"]["pages"] == 2  # 4x6 stickers
    assert result["zip"]["files"] == 30 and result["success_rate"] == 1.0


def test_too_many_items_is_413_and_bad_items_422(client, templates, alice, settings):
    too_many = settings.max_batch_items + 1
    assert_error(client.post(URL, json={"template_ids": [4], "options": {"copies": too_many}},
                             headers=alice[1]), 413, "template_ids")
    assert_error(client.post(URL, json={"items": [{"template_id": 4}] * too_many},
                             headers=alice[1]), 413, "items")
    assert_error(client.post(URL, json={"items": [{"template_id": 4}, {"template_id": 77}]},
                             headers=alice[1]), 422, "items[1].template_id")
    for body in ("[1]", "null", '"x"'):  # not an object: 400, as on every route
        assert_error(client.post(URL, data=body, headers=alice[1],
                                 content_type="application/json"), 400)
    for options in ([], "", 0, False):
        assert_error(client.post(URL, json={"template_ids": [4], "options": options},
                                 headers=alice[1]), 422, "options")
    assert_error(client.post(URL, data="nope", headers=alice[1]), 400)
    for value in (["H"], {"H": 1}):  # unhashable: was a 500
        assert_error(client.post(URL, json={"template_ids": [4],
                                            "options": {"error_correction": value}},
                                 headers=alice[1]), 422, "options.error_correction")
    assert huey.storage.queue_size() == 0
    assert huey.storage.sql("select count(*) from batch_item", results=True)[0][0] == 0


@pytest.mark.parametrize(("url", "body"), [
    (URL, {"items": [{"template_id": 4}] * 3 + [{"template_id": 4, "title": "\ud800"}]}),
    (URL, {"items": [{"template_id": 4, "data": "x\ud800"}]}),
    (URL, {"template_ids": [4], "options": {"lines": ["\udfff"]}}),
    ("/api/generate-qr-pdf", {"template_id": 1, "options": {"data": "\ud800"}}),
    ("/api/generate-qr-pdf", {"template_id": 1, "options": {"title": "a\ud800"}}),
])
def test_a_lone_surrogate_is_422_not_500(client, templates, alice, url, body):
    """Valid JSON (``"\\ud800"``) that is not text: refused before anything is queued."""
    raw = json.dumps(body)  # ASCII, the surrogate as an escape
    assert "\\ud" in raw or "\\udf" in raw
    assert_error(client.post(url, data=raw, headers=alice[1],
                             content_type="application/json"), 422)
    assert huey.storage.queue_size() == 0


def test_a_failing_item_is_recorded_and_the_batch_still_finishes(client, templates, alice,
                                                                  tmp_path):
    long = "x" * 3000  # valid text, but more than a code holds at error correction H
    items = [{"template_id": 3, "data": f"https://events.example/{i}"} for i in range(5)]
    items[2] = {"template_id": 3, "data": long}
    items[4] = {"template_id": 3, "data": "https://events.example/named", "title": "Ada"}
    job_id = submit(client, alice[1], {"items": items})["batch_job_id"]
    assert run_job(job_id)["status"] == "finished"

    status = client.get(f"/api/job-status/{job_id}", headers=alice[1]).get_json()
    assert (status["completed"], status["failed"], status["total"]) == (4, 1, 5)
    failed = client.get(f"/api/batch/{job_id}/items?status=failed", headers=alice[1]).get_json()
    assert [i["idx"] for i in failed["items"]] == [2] and failed["total"] == 1
    assert "do not fit" in failed["items"][0]["error"] and failed["items"][0]["output"] is None
    ok = client.get(f"/api/batch/{job_id}/items?status=ok&per_page=2&page=2",
                    headers=alice[1]).get_json()
    assert [i["idx"] for i in ok["items"]] == [3, 4] and ok["next_page"] is None
    assert ok["items"][0]["output"]["file"] == "00003-events.example-3.svg"
    with client.get(ok["items"][0]["output"]["svg_url"], headers=alice[1]) as svg:
        assert svg.mimetype == "image/svg+xml"
        assert svg_decode(svg.get_data(as_text=True)) == ["https://events.example/3"]

    with client.get(f"/api/batch/{job_id}/download/zip", headers=alice[1]) as response:
        assert response.status_code == 200 and response.mimetype == "application/zip"
        archive = zipfile.ZipFile(io.BytesIO(response.data))
    names = archive.namelist()
    assert names == ["00000-events.example-0.svg", "00001-events.example-1.svg",
                     "00003-events.example-3.svg", "00004-events.example-named.svg",
                     "manifest.csv"]
    assert svg_decode(archive.read(names[3]).decode()) == ["https://events.example/named"]
    manifest = archive.read("manifest.csv").decode().splitlines()
    assert manifest[0] == "idx,source_idx,template_id,status,file,data,error"
    assert manifest[3].startswith("2,,3,failed,,xxx")
    with client.get(f"/api/batch/{job_id}/download/pdf", headers=alice[1]) as response:
        (tmp_path / "b.pdf").write_bytes(response.data)
    reader = pypdf.PdfReader(tmp_path / "b.pdf")
    assert len(reader.pages) == 1  # 4 cards on a 2x3 badge page
    assert "Ada" in reader.pages[0].extract_text()
    assert decode_page(tmp_path / "b.pdf", 1, tmp_path) == sorted(
        ["https://events.example/0", "https://events.example/1", "https://events.example/3",
         "https://events.example/named"])


def test_a_batch_whose_every_item_failed_ends_failed_without_a_blank_pdf(client, templates,
                                                                          alice):
    items = [{"template_id": 3, "data": "x" * 3000 + str(i)} for i in range(2)]  # too long
    job_id = submit(client, alice[1], {"items": items})["batch_job_id"]
    assert run_job(job_id)["status"] == "failed"
    status = client.get(f"/api/job-status/{job_id}", headers=alice[1]).get_json()
    assert status["error"] == (f"no item could be rendered: all 2 failed; see each item's "
                               f"error at /api/batch/{job_id}/items?status=failed "
                               f"(qrq batch items {job_id} --failed)")
    assert (status["completed"], status["failed"], status["total"]) == (0, 2, 2)
    summary = client.get(f"/api/batch/{job_id}", headers=alice[1]).get_json()
    assert summary["status"] == "failed" and summary["downloads"] == {}
    assert (summary["completed"], summary["failed"]) == (0, 2)
    failed = client.get(f"/api/batch/{job_id}/items?status=failed", headers=alice[1]).get_json()
    assert [i["idx"] for i in failed["items"]] == [0, 1]
    assert all("do not fit" in i["error"] for i in failed["items"])
    for url in (f"/api/batch/{job_id}/download/pdf", f"/api/batch/{job_id}/download/zip",
                f"/api/jobs/{job_id}/download"):
        with client.get(url, headers=alice[1]) as response:
            assert response.status_code == 409, url
            assert response.get_json()["error"]["job_status"] == "failed"
    retry = client.post(f"/api/batch/{job_id}/retry-failed", headers=alice[1])
    assert retry.status_code == 202 and retry.get_json()["total_items"] == 2


def test_formats_put_a_png_next_to_each_svg_in_the_zip(client, templates, alice):
    items = [{"template_id": 3, "data": f"https://events.example/{i}"} for i in range(3)]
    items[1]["data"] = "x" * 3000  # fails: too long for a code at H
    job_id = submit(client, alice[1], {"items": items,
                                       "options": {"formats": ["svg", "png"]}})["batch_job_id"]
    assert run_job(job_id)["status"] == "finished"

    with client.get(f"/api/batch/{job_id}/download/zip", headers=alice[1]) as response:
        archive = zipfile.ZipFile(io.BytesIO(response.data))
    assert archive.namelist() == [
        "00000-events.example-0.svg", "00000-events.example-0.png",
        "00002-events.example-2.svg", "00002-events.example-2.png", "manifest.csv"]
    for idx in (0, 2):
        png = Image.open(io.BytesIO(archive.read(f"0000{idx}-events.example-{idx}.png")))
        assert [r.text for r in zxingcpp.read_barcodes(png)] == [f"https://events.example/{idx}"]
        assert svg_decode(archive.read(f"0000{idx}-events.example-{idx}.svg").decode()) == [
            f"https://events.example/{idx}"]
    manifest = archive.read("manifest.csv").decode().splitlines()
    assert manifest[1].startswith(
        "0,,3,ok,00000-events.example-0.svg;00000-events.example-0.png,")
    status = client.get(f"/api/batch/{job_id}", headers=alice[1]).get_json()
    assert status["downloads"]["zip"]["files"] == 4, status
    assert status["downloads"]["zip"]["formats"] == ["svg", "png"]

    ok = client.get(f"/api/batch/{job_id}/items?status=ok", headers=alice[1]).get_json()
    output = ok["items"][1]["output"]
    assert output["files"] == ["00002-events.example-2.svg", "00002-events.example-2.png"]
    with client.get(output["png_url"], headers=alice[1]) as png:
        assert png.status_code == 200 and png.mimetype == "image/png"
        assert png.data == archive.read(output["files"][1])  # the ZIP's file, byte for byte
        image = Image.open(io.BytesIO(png.data))
        assert [r.text for r in zxingcpp.read_barcodes(image)] == ["https://events.example/2"]
    with client.get(output["svg_url"], headers=alice[1]) as svg:
        assert svg.mimetype == "image/svg+xml"
        assert svg.data == archive.read(output["files"][0])
    assert_error(client.get(f"/api/batch/{job_id}/items/1/png", headers=alice[1]), 404)
    beyond = assert_error(client.get(f"/api/batch/{job_id}/items/99/png", headers=alice[1]),
                          404)
    assert beyond["message"] == f"batch {job_id} has no item 99 (its items are 0 to 2)"
    assert_error(client.get(f"/api/batch/{job_id}/items/0/jpeg", headers=alice[1]), 404)

    retry = client.post(f"/api/batch/{job_id}/retry-failed", headers=alice[1]).get_json()
    assert batch.get_batch(huey.storage, retry["batch_job_id"])["options"]["formats"] == [
        "svg", "png"]


def test_retry_failed_reruns_only_the_failed_items(client, templates, alice):
    items = [{"template_id": 3, "data": "y" * 2500 if i in (1, 3) else f"ok-{i}"}
             for i in range(5)]
    first = submit(client, alice[1], {"items": items})["batch_job_id"]
    assert_error(client.post(f"/api/batch/{first}/retry-failed", headers=alice[1]), 409)
    run_job(first)
    response = client.post(f"/api/batch/{first}/retry-failed", headers=alice[1])
    assert response.status_code == 202
    second = response.get_json()
    assert second["parent_job_id"] == first and second["total_items"] == 2
    listed = client.get(f"/api/batch/{second['batch_job_id']}/items",
                        headers=alice[1]).get_json()["items"]
    assert [(i["idx"], i["source_idx"]) for i in listed] == [(0, 1), (1, 3)]
    assert all(i["status"] == "pending" for i in listed)
    # Sent twice (a form resubmitted), the same items are not queued twice meanwhile.
    again = assert_error(client.post(f"/api/batch/{first}/retry-failed", headers=alice[1]),
                         409)
    assert second["batch_job_id"] in again["message"]
    parent = client.get(f"/api/batch/{first}", headers=alice[1]).get_json()
    assert parent["retry_job_ids"] == [second["batch_job_id"]]
    assert client.get(f"/api/batch/{second['batch_job_id']}",
                      headers=alice[1]).get_json()["retry_job_ids"] == []
    run_job(second["batch_job_id"])
    status = client.get(f"/api/job-status/{second['batch_job_id']}", headers=alice[1]).get_json()
    assert (status["completed"], status["failed"]) == (0, 2)  # still too long, still failed
    assert status["status"] == "failed"  # no item rendered: no blank outputs
    assert client.get(f"/api/batch/{second['batch_job_id']}",
                      headers=alice[1]).get_json()["parent_job_id"] == first


@pytest.mark.postgres_only("row locks: on SQLite the write transaction holds the whole "
                            "database, so two retries cannot overlap")
def test_a_retry_sent_while_another_is_being_made_waits_for_it_and_is_refused(
        client, templates, alice, pg_url):
    import threading

    import psycopg

    items = [{"template_id": 3, "data": "y" * 2500 if i == 1 else f"ok-{i}"} for i in range(3)]
    first = submit(client, alice[1], {"items": items})["batch_job_id"]
    run_job(first)
    schema = pg_url.rsplit("application_name=", 1)[1]
    answers = []
    with psycopg.connect(pg_url) as other, psycopg.connect(pg_url, autocommit=True) as watch:
        # Another retry of the same items, midway through its transaction: it holds the
        # parent's row and has made its child batch, not yet committed.
        other.execute("select 1 from batch where job_id = %s for update", (first,))
        other.execute("insert into batch (job_id, parent_id, owner_id, total, options, "
                      "created_at) values ('the-other-retry', %s, null, 1, '{}', 0)", (first,))
        thread = threading.Thread(target=lambda: answers.append(client.post(
            f"/api/batch/{first}/retry-failed", headers=alice[1])))
        thread.start()
        wait_until(lambda: watch.execute(
            "select count(*) from pg_stat_activity where application_name = %s "
            "and wait_event_type = 'Lock'", (schema,)).fetchone()[0],
            timeout=10, message="the second retry to wait for the first's row lock")
        other.commit()
        thread.join(timeout=30)
    assert not thread.is_alive()
    refused = assert_error(answers[0], 409)
    assert "the-other-retry" in refused["message"]


def test_other_users_get_404_and_admins_see_all(client, templates, alice, make_user):
    _, bob = make_user("bob")
    _, admin = make_user("root", admin=True)
    job_id = submit(client, alice[1], {"template_ids": [1]})["batch_job_id"]
    run_job(job_id)
    for url in (f"/api/job-status/{job_id}", f"/api/batch/{job_id}",
                f"/api/batch/{job_id}/items", f"/api/batch/{job_id}/items/0/svg",
                f"/api/batch/{job_id}/download/pdf", f"/api/batch/{job_id}/download/zip"):
        with client.get(url, headers=bob) as response:
            assert_error(response, 404)
        with client.get(url, headers=admin) as response:
            assert response.status_code == 200, url
    assert_error(client.post(f"/api/batch/{job_id}/retry-failed", headers=bob), 404)
    assert_error(client.get(f"/api/batch/{job_id}/items?status=done", headers=alice[1]),
                 422, "status")
    assert_error(client.get(f"/api/batch/{job_id}/items?page=0", headers=alice[1]), 422, "page")
    with client.get(f"/api/batch/{job_id}/download/exe", headers=alice[1]) as response:
        assert_error(response, 404)
    pdf_job = client.post("/api/generate-qr-pdf", json={"template_id": 1},
                          headers=alice[1]).get_json()["job_id"]
    assert_error(client.get(f"/api/batch/{pdf_job}/items", headers=alice[1]), 404)


def test_cancel_before_the_first_item_keeps_an_empty_but_valid_output(client, templates,
                                                                      alice):
    job_id = submit(client, alice[1], {"template_ids": [2], "options": {"copies": 5}})[
        "batch_job_id"]
    task = huey.dequeue()
    assert client.delete(f"/api/jobs/{job_id}", headers=alice[1]).status_code == 202
    huey.execute(task)
    status = client.get(f"/api/job-status/{job_id}", headers=alice[1]).get_json()
    assert status["status"] == "canceled" and status["completed"] == 0
    pending = client.get(f"/api/batch/{job_id}/items?status=pending",
                         headers=alice[1]).get_json()
    assert pending["total"] == 5
    summary = client.get(f"/api/batch/{job_id}", headers=alice[1]).get_json()
    assert summary["downloads"]["zip"]["files"] == 0
    assert status["stage"] == "canceled after 0/5 items; their PDF and ZIP are kept"
    assert status["progress"] == 0  # of the items, not of the steps the cancel skipped
    # Its outputs are served at both URLs, the same file (the job's URL: the PDF).
    with client.get(f"/api/batch/{job_id}/download/pdf", headers=alice[1]) as by_batch, \
            client.get(f"/api/jobs/{job_id}/download", headers=alice[1]) as by_job:
        assert by_batch.status_code == by_job.status_code == 200
        assert by_job.data == by_batch.data and by_job.data.startswith(b"%PDF")


def test_a_batch_is_downloaded_at_the_jobs_url_only_once_it_has_outputs(client, templates,
                                                                        alice):
    job_id = submit(client, alice[1], {"template_ids": [2]})["batch_job_id"]
    refused = client.get(f"/api/jobs/{job_id}/download", headers=alice[1])
    assert refused.status_code == 409
    assert refused.get_json()["error"]["job_status"] == "queued"
    run_job(job_id)
    with client.get(f"/api/jobs/{job_id}/download", headers=alice[1]) as response:
        assert response.status_code == 200 and response.mimetype == "application/pdf"


def test_a_rerun_resumes_after_the_items_already_done(settings, templates, client, alice):
    """A run that died after some chunks: the next run encodes only the rest."""
    job_id = submit(client, alice[1], {"template_ids": [4], "options": {"copies": 250}})[
        "batch_job_id"]
    task = huey.dequeue()
    specs = batch_run._Specs(batch.load_templates([4]), {}, 5.0)
    calls = []

    def die_after_150():
        calls.append(1)
        if len(calls) > 150:
            raise KeyboardInterrupt("the consumer died")

    with pytest.raises(KeyboardInterrupt):
        batch_run.encode_pending(huey.storage, job_id, 250, specs, die_after_150)
    # The chunks written before the death (every 100 items, or sooner if slow) stay.
    done = batch.counts(huey.storage, job_id)["completed"]
    assert 50 <= done <= 150
    huey.execute(task)
    job = jobs.get(huey.storage, job_id)
    result = json.loads(job["result"])
    assert result["resumed_after"] == done and result["encoded_this_run"] == 250 - done
    assert result["completed"] == 250 and result["zip"]["files"] == 250
    assert result["pdf"]["cards"] == 250


def test_items_rows_go_with_their_job(client, templates, alice, settings):
    from qrq.artifacts import open_store
    from qrq.queue.retention import purge_jobs

    job_id = submit(client, alice[1], {"template_ids": [1, 2]})["batch_job_id"]
    run_job(job_id)
    assert purge_jobs(huey.storage, open_store(settings), -60) >= 1
    assert batch.get_batch(huey.storage, job_id) is None
    assert huey.storage.sql("select count(*) from batch_item", results=True)[0][0] == 0
    assert not list(settings.artifacts_dir.glob(f"{job_id}*"))


def test_a_batch_body_may_exceed_the_general_request_limit(settings, templates, alice):
    from qrq.web import create_app

    items = [{"template_id": 4, "data": f"https://shop.qrcards.example/{i:05d}/" + "x" * 120}
             for i in range(10_000)]
    body = json.dumps({"items": items}).encode()
    assert settings.max_request_bytes < len(body) < settings.max_batch_bytes
    client = create_app({"SETTINGS": settings, "TESTING": True}).test_client()
    response = client.post(URL, data=body, headers=alice[1], content_type="application/json")
    assert response.status_code == 202 and response.get_json()["total_items"] == 10_000
    small = dataclasses.replace(settings, max_batch_bytes=len(body) - 1)
    client = create_app({"SETTINGS": small, "TESTING": True}).test_client()
    assert_error(client.post(URL, data=body, headers=alice[1],
                             content_type="application/json"), 413)


def test_an_admin_retry_keeps_the_owner(client, templates, alice, make_user):
    _, admin = make_user("root", admin=True)
    job_id = submit(client, alice[1], {"items": [{"template_id": 1, "data": "w" * 4000}]})[
        "batch_job_id"]
    run_job(job_id)
    retry = client.post(f"/api/batch/{job_id}/retry-failed", headers=admin).get_json()
    assert jobs.get(huey.storage, retry["batch_job_id"])["owner_id"] == alice[0].id
    assert client.get(f"/api/batch/{retry['batch_job_id']}", headers=alice[1]).status_code == 200


@pytest.mark.sqlite_only("counts the writes with a SQLite temp trigger")
def test_progress_is_written_in_chunks_not_per_item(client, templates, alice):
    huey.storage.sql("create table progress_log (progress integer)", commit=True)
    huey.storage.sql("create temp trigger log_progress after update of progress on job "
                     "begin insert into progress_log values (new.progress); end", commit=True)
    job_id = submit(client, alice[1], {"template_ids": [4], "options": {"copies": 1000}})[
        "batch_job_id"]
    assert run_job(job_id)["status"] == "finished"
    logged = [p for p, in huey.storage.sql("select progress from progress_log",
                                           results=True)]
    # 10 chunks of 100, more if a chunk took over half a second (a loaded machine).
    assert 10 <= len(logged) <= 150, len(logged)  # per item it would be 1000
    assert logged == sorted(logged) and logged[-1] == 100


def test_batch_code_leaves_the_job_table_to_the_job_records_module():
    """Job progress is written through qrq.queue.jobs, never by SQL of its own."""
    from pathlib import Path

    import qrq.batch

    for path in Path(qrq.batch.__file__).parent.glob("*.py"):
        source = path.read_text()
        assert not re.search(r"\b(update|into)\s+job\b", source, re.I), path


def test_a_run_that_lost_its_lease_does_not_write_progress(client, templates, alice):
    job_id = submit(client, alice[1], {"template_ids": [2], "options": {"copies": 3}})[
        "batch_job_id"]
    huey.dequeue()  # leased to this process
    batch_run._report(huey.storage, job_id, 40, "ours")
    assert jobs.get(huey.storage, job_id)["progress"] == 40
    huey.storage.sql("update job set worker = 'another/1:feed' where id = ?", (job_id,),
                     commit=True)  # another consumer took the job over
    batch_run._report(huey.storage, job_id, 70, "stale")
    assert (jobs.get(huey.storage, job_id)["progress"], jobs.get(huey.storage, job_id)["stage"]
            ) == (40, "ours")


def test_a_retry_batch_page_shows_each_item_number_in_the_batch_it_retried(
        app, client, templates, alice, make_user):
    from tests.dashboard import logged_in

    items = [{"template_id": 3, "data": "y" * 2500 if i in (1, 3) else f"ok-{i}"}
             for i in range(5)]
    first = submit(client, alice[1], {"items": items})["batch_job_id"]
    run_job(first)
    second = client.post(f"/api/batch/{first}/retry-failed", headers=alice[1]).get_json()
    _, root = make_user("root", admin=True)
    admin, _ = logged_in(app, "root", root)
    page = admin.get(f"/admin/jobs/{second['batch_job_id']}").text
    assert "Retried #" in page
    assert re.findall(r'<td class="num source-idx">(\d+)</td>', page) == ["1", "3"]
    assert "Retried #" not in admin.get(f"/admin/jobs/{first}").text


def test_the_manifest_keeps_a_spreadsheet_from_running_a_payload(client, templates, alice):
    items = [{"template_id": 1, "data": '=HYPERLINK("http://evil.example","x")'},
             {"template_id": 1, "data": "@SUM(1)"}, {"template_id": 1, "data": "plain"}]
    job_id = submit(client, alice[1], {"items": items})["batch_job_id"]
    assert run_job(job_id)["status"] == "finished"
    with client.get(f"/api/batch/{job_id}/download/zip", headers=alice[1]) as response:
        archive = zipfile.ZipFile(io.BytesIO(response.data))
    rows = list(csv.reader(io.StringIO(archive.read("manifest.csv").decode())))
    assert [row[5] for row in rows[1:]] == ["'" + items[0]["data"], "'@SUM(1)", "plain"]
    # The codes themselves hold the payloads as given.
    listed = client.get(f"/api/batch/{job_id}/items", headers=alice[1]).get_json()["items"]
    assert [i["data"] for i in listed] == [i["data"] for i in items]
