import subprocess

import pypdf
import pytest
import zxingcpp
from PIL import Image

from qrq.cards.pdf import UnprintableText
from qrq.cards.qr import CardSpec, DataTooLong, dark_runs, qr_matrix, render_pdf

A4 = (210.0, 297.0)


def decode_page(pdf, page, tmp_path, dpi=150):
    """Render one PDF page with poppler and decode every QR code on it."""
    prefix = tmp_path / f"page{page}"
    subprocess.run(["pdftoppm", "-r", str(dpi), "-png", "-singlefile", "-f", str(page),
                    "-l", str(page), str(pdf), str(prefix)], check=True)
    with Image.open(f"{prefix}.png") as image:
        return sorted(r.text for r in zxingcpp.read_barcodes(image))


def test_dark_runs_cover_exactly_the_dark_modules():
    matrix = qr_matrix("https://qrcards.example/c/1")
    covered = {(r, c + i) for r, c, n in dark_runs(matrix) for i in range(n)}
    dark = {(r, c) for r, row in enumerate(matrix) for c, cell in enumerate(row) if cell}
    assert covered == dark


def test_data_too_long_is_refused():
    with pytest.raises(DataTooLong):
        qr_matrix("x" * 3000, "H")


def test_pages_sizes_and_vector_codes(tmp_path):
    spec = CardSpec(*A4, cols=2, rows=4, qr_size_mm=40, title="T")
    payloads = [f"https://qrcards.example/c/{i}" for i in range(1, 18)]
    result = render_pdf(spec, payloads, tmp_path / "out.pdf")
    reader = pypdf.PdfReader(result.path)
    assert result.pages == len(reader.pages) == 3  # 17 cards, 8 per page
    box = reader.pages[0].mediabox
    assert round(float(box.width) / 72 * 25.4) == 210
    assert round(float(box.height) / 72 * 25.4) == 297
    # Drawn as paths: no raster image anywhere, rectangles in the content stream.
    assert all(len(page.images) == 0 for page in reader.pages)
    assert b" re" in reader.pages[0].get_contents().get_data()
    assert result.bytes == result.path.stat().st_size


def test_codes_decode_to_their_payloads(tmp_path):
    spec = CardSpec(*A4, cols=2, rows=2, qr_size_mm=60, fg_color="#1d3557")
    payloads = [f"https://qrcards.example/c/{i}" for i in range(1, 5)]
    result = render_pdf(spec, payloads, tmp_path / "out.pdf")
    assert decode_page(result.path, 1, tmp_path) == sorted(payloads)


def test_user_text_is_printed_literally(tmp_path):
    title = "<b>Bold?</b> & <font size=40>"
    spec = CardSpec(*A4, title=title, lines=("a&amp;b", "%PDF-1.4 )("))
    result = render_pdf(spec, ["x"], tmp_path / "out.pdf")
    text = pypdf.PdfReader(result.path).pages[0].extract_text()
    assert title in text
    assert "a&amp;b" in text
    assert "%PDF-1.4 )(" in text


def test_write_is_atomic_and_leaves_no_temp_file(tmp_path):
    spec = CardSpec(*A4)
    pages = []
    render_pdf(spec, ["a", "b"], tmp_path / "out.pdf",
               progress=lambda done, total: pages.append((done, total)))
    assert pages == [(1, 2), (2, 2)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.pdf"]


def test_failed_render_keeps_no_partial_file(tmp_path):
    spec = CardSpec(*A4)
    with pytest.raises(DataTooLong):
        render_pdf(spec, ["ok", "x" * 5000], tmp_path / "out.pdf")
    assert list(tmp_path.iterdir()) == []


def test_western_european_text_prints_and_the_title_keeps_any_text(tmp_path):
    spec = CardSpec(*A4, title="Zoë Café", lines=("Crème brûlée – 5 €",))
    result = render_pdf(spec, ["x"], tmp_path / "out.pdf", title="Zoë Łódź 東京")
    reader = pypdf.PdfReader(result.path)
    text = reader.pages[0].extract_text()
    assert "Zoë Café" in text and "Crème brûlée – 5 €" in text
    assert reader.metadata.title == "Zoë Łódź 東京"  # metadata is UTF-16: any text


@pytest.mark.parametrize("text", ["Zoë Łódź", "東京", "\ud800"])
def test_text_the_fonts_cannot_print_is_refused_not_replaced(tmp_path, text):
    with pytest.raises(UnprintableText, match="cannot print"):
        render_pdf(CardSpec(*A4, lines=(text,)), ["x"], tmp_path / "out.pdf")
    assert list(tmp_path.iterdir()) == []
