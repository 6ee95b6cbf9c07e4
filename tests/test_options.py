import pytest

from qrq.cards.generate import prepare
from qrq.cards.options import build_spec, check_options
from qrq.errors import ValidationError

TEMPLATE = {
    "id": 3, "name": "cards", "domain": "qrcards.example",
    "payload": "https://{domain}/c/{template_id}/{copy}", "title": "Hi", "lines": [],
    "page_size": "A4", "grid": "2x4", "qr_size_mm": 40.0, "qr_x_mm": None, "qr_y_mm": None,
    "colors": {"fg": "#000000", "bg": "#ffffff"}, "error_correction": "M", "quiet_zone": 4,
}


@pytest.mark.parametrize("options, field", [
    ({"copies": 0}, "options.copies"),
    ({"copies": 1_000_000}, "options.copies"),
    ({"copies": "3"}, "options.copies"),
    ({"copies": True}, "options.copies"),
    ({"size_mm": 0}, "options.size_mm"),
    ({"size_mm": 120}, "options.size_mm"),  # larger than a 2x4 card on A4
    ({"colors": {"fg": "red"}}, "options.colors.fg"),
    ({"colors": {"ink": "#000000"}}, "options.colors"),
    ({"title": 5}, "options.title"),
    ({"title": "x" * 201}, "options.title"),
    ({"lines": ["ok", 3]}, "options.lines[1]"),
    ({"lines": ["x"] * 11}, "options.lines"),
    ({"page_size": "B7"}, "options.page_size"),
    ({"page_size": "5x5"}, "options.page_size"),
    ({"grid": "0x3"}, "options.grid"),
    ({"error_correction": "Z"}, "options.error_correction"),
    ({"error_correction": ["H"]}, "options.error_correction"),  # unhashable: was a 500
    ({"error_correction": {"H": 1}}, "options.error_correction"),
    ({"quiet_zone": -1}, "options.quiet_zone"),
    ({"data": ""}, "options.data"),
    ({"data": "{__class__}"}, "options.data"),
    ({"data": "{copy.__class__}"}, "options.data"),
    ({"data": "é" * 3000}, "options.data"),  # longer than any QR code holds
    ({"colour": "#000000"}, "options.colour"),
    ({"data": "https://x.example/\ud800"}, "options.data"),  # a lone surrogate
    ({"title": "a\udfff"}, "options.title"),
    ({"lines": ["ok", "\ud800"]}, "options.lines[1]"),
    ({"title": "Zoë Łódź 東京"}, "options.title"),  # the PDF fonts cannot print Ł or 東
    ({"lines": ["東京"]}, "options.lines[0]"),
    ({"grid": "２x２"}, "options.grid"),  # ASCII digits only, as the API says
    ({"page_size": "٢١٠x٢٩٧"}, "options.page_size"),
])
def test_bad_options_name_their_field(options, field):
    with pytest.raises(ValidationError) as caught:
        prepare(TEMPLATE, options, max_copies=1000, margin_mm=5)
    assert caught.value.field == field
    assert caught.value.status == 422


def test_options_must_be_an_object():
    with pytest.raises(ValidationError) as caught:
        check_options(["copies"], 10)
    assert caught.value.field == "options"


def test_options_override_the_template():
    spec, payloads = prepare(TEMPLATE, {"copies": 3, "title": "Table", "size_mm": 30,
                                        "colors": {"fg": "#112233"}, "grid": "1x1"}, 1000,
                             margin_mm=5)
    assert (spec.title, spec.qr_size_mm, spec.fg_color, spec.bg_color) == (
        "Table", 30, "#112233", "#ffffff")
    assert (spec.cols, spec.rows) == (1, 1)
    assert payloads == [f"https://qrcards.example/c/3/{i}" for i in (1, 2, 3)]


def test_custom_page_size_in_mm():
    spec = build_spec({**TEMPLATE, "page_size": "85x55", "grid": "1x1"}, {"size_mm": 50},
                      margin_mm=0)
    assert (spec.page_width_mm, spec.page_height_mm) == (85.0, 55.0)


def test_text_outside_the_pdf_fonts_is_refused_naming_the_character():
    with pytest.raises(ValidationError) as caught:
        prepare(TEMPLATE, {"title": "Zoë Łódź"}, 10, margin_mm=5)
    assert "'Ł'" in caught.value.message and "U+0141" in caught.value.message
    spec, _ = prepare(TEMPLATE, {"title": "Zoë Café – 5 €"}, 10,
                      margin_mm=5)  # all in Windows-1252
    assert spec.title == "Zoë Café – 5 €"


def test_a_stored_template_with_unprintable_text_is_refused_before_rendering():
    with pytest.raises(ValidationError) as caught:
        prepare({**TEMPLATE, "title": "東京"}, {}, 10, margin_mm=5)
    assert caught.value.field == "title"
    with pytest.raises(ValidationError) as caught:
        prepare({**TEMPLATE, "lines": ["ok", "Łódź"]}, {}, 10, margin_mm=5)
    assert caught.value.field == "lines[1]"
    spec, _ = prepare({**TEMPLATE, "title": "東京"}, {"title": "Tokyo"}, 10, margin_mm=5)
    assert spec.title == "Tokyo"  # the option replaces the unprintable title
