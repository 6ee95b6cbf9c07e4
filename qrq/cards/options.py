"""Validation of card templates and of the per-request options that override them.

A template and a request's ``options`` speak the same field names; both go
through :data:`FIELDS`, so a value a template may hold is exactly a value an
option may set. Every failure is a :class:`~qrq.errors.ValidationError` naming
the field.
"""

from __future__ import annotations

import dataclasses
import math
import re
import string
from collections.abc import Callable
from typing import Any

from qrq.cards.encoder import ERROR_CORRECTION, DataTooLong
from qrq.cards.encoder import check_fits as fits_in_a_code
from qrq.cards.pdf import TEXT_ENCODING, unprintable
from qrq.cards.qr import CardSpec
from qrq.errors import ValidationError

PAGE_SIZES_MM = {"A4": (210.0, 297.0), "A5": (148.0, 210.0), "Letter": (215.9, 279.4)}
PLACEHOLDERS = ("template_id", "domain", "copy", "job_id")
MAX_TEXT = 200
MAX_LINES = 10
MAX_DATA = 4296  # the most characters any QR code holds (alphanumeric, version 40-L)
_HEX = re.compile(r"#[0-9a-fA-F]{6}")
_SIZE = re.compile(r"(\d+(?:\.\d+)?)x(\d+(?:\.\d+)?)", re.ASCII)  # not "٢١٠x٢٩٧"
_GRID = re.compile(r"(\d{1,2})x(\d{1,2})", re.ASCII)


@dataclasses.dataclass(frozen=True)
class Field:
    name: str
    help: str
    check: Callable[[Any, str], Any]


def check_unicode(value: str, field: str) -> str:
    """Refuse a lone surrogate (``"\\ud800"``, valid JSON but not text): it cannot be
    encoded, so neither stored as UTF-8 nor put in a code."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValidationError(f"must be valid Unicode text: a lone surrogate "
                              f"U+{ord(value[exc.start]):04X} at character {exc.start}",
                              field=field) from None
    return value


def check_printable(value: str, field: str) -> str:
    """Refuse text the PDF fonts cannot print, rather than print ``?`` in its place."""
    char = unprintable(check_unicode(value, field))
    if char is not None:
        raise ValidationError(f"cannot print {char!r} (U+{ord(char):04X}): titles and lines "
                              "are printed in Western European characters (Windows-1252)",
                              field=field)
    return value


def _printable_pattern() -> str:
    """A JSON Schema pattern of the text the PDF fonts print, as ``\\uXXXX`` ranges. Their
    encoding has one byte per character, so decoding every byte lists all it prints (each
    process imports this: trying every character up to U+2200 took 9 ms)."""
    chars = sorted({ch for ch in bytes(range(256)).decode(TEXT_ENCODING, errors="ignore")
                    if ord(ch) >= 32 and unprintable(ch) is None})
    ranges: list[list[int]] = []
    for code in map(ord, chars):
        if ranges and ranges[-1][1] == code - 1:
            ranges[-1][1] = code
        else:
            ranges.append([code, code])
    return "^[" + "".join(f"\\u{a:04x}" + (f"-\\u{b:04x}" if b > a else "")
                          for a, b in ranges) + "]*$"


_PRINTABLE_PATTERN = _printable_pattern()


def _text(max_len: int, printed: bool = False) -> Callable[[Any, str], str]:
    """A check of a string of at most *max_len* characters; *printed* text must be
    printable on a PDF page too."""
    def check(value: Any, field: str) -> str:
        if not isinstance(value, str):
            raise ValidationError("must be a string", field=field)
        if len(value) > max_len:
            raise ValidationError(f"must be at most {max_len} characters", field=field)
        if any(ord(ch) < 32 for ch in value):
            raise ValidationError("must not contain control characters", field=field)
        return check_printable(value, field) if printed else check_unicode(value, field)
    check.json_schema = {"type": "string", "maxLength": max_len}
    if printed:
        check.json_schema["pattern"] = _PRINTABLE_PATTERN
    return check


def _number(low: float, high: float, integer: bool = False) -> Callable[[Any, str], float]:
    def check(value: Any, field: str) -> float:
        kinds = (int,) if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds):
            raise ValidationError(f"must be {'an integer' if integer else 'a number'}",
                                  field=field)
        if not low <= value <= high:
            raise ValidationError(f"must be between {low:g} and {high:g}", field=field)
        return value
    check.json_schema = {"type": "integer" if integer else "number", "minimum": low,
                         "maximum": high}
    return check


def check_payload(value: Any, field: str) -> str:
    """A QR payload pattern: text with only the documented ``{placeholders}``."""
    value = _text(MAX_DATA)(value, field)
    if not value:
        raise ValidationError("must not be empty", field=field)
    try:
        parsed = list(string.Formatter().parse(value))
    except ValueError as exc:
        raise ValidationError(f"bad placeholder syntax: {exc}", field=field) from None
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        known = ", ".join(f"{{{p}}}" for p in PLACEHOLDERS)
        if name not in PLACEHOLDERS:
            raise ValidationError(f"unknown placeholder {{{name}}}; use {known}", field=field)
        if spec or conversion:
            raise ValidationError(f"placeholder {{{name}}} takes no format ({{{name}:...}} "
                                  f"or {{{name}!...}}); use {known} as they are", field=field)
    return value


def check_lines(value: Any, field: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ValidationError("must be a list of strings", field=field)
    if len(value) > MAX_LINES:
        raise ValidationError(f"must have at most {MAX_LINES} lines", field=field)
    return tuple(_text(MAX_TEXT, printed=True)(line, f"{field}[{i}]")
                 for i, line in enumerate(value))


def check_colors(value: Any, field: str) -> dict[str, str]:
    if not isinstance(value, dict) or not set(value) <= {"fg", "bg"}:
        raise ValidationError('must be an object with "fg" and/or "bg"', field=field)
    for key, colour in value.items():
        if not isinstance(colour, str) or not _HEX.fullmatch(colour):
            raise ValidationError("must be a colour like #1a2b3c", field=f"{field}.{key}")
    return value


def check_page_size(value: Any, field: str) -> tuple[float, float]:
    if isinstance(value, str) and value in PAGE_SIZES_MM:
        return PAGE_SIZES_MM[value]
    match = _SIZE.fullmatch(value) if isinstance(value, str) else None
    if not match:
        raise ValidationError("must be A4, A5, Letter or WIDTHxHEIGHT in mm, e.g. 85x55",
                              field=field)
    width, height = float(match[1]), float(match[2])
    if not (20 <= width <= 1200 and 20 <= height <= 1200):
        raise ValidationError("each side must be between 20 and 1200 mm", field=field)
    return width, height


def check_grid(value: Any, field: str) -> tuple[int, int]:
    match = _GRID.fullmatch(value) if isinstance(value, str) else None
    if not match or not (1 <= int(match[1]) <= 10 and 1 <= int(match[2]) <= 10):
        raise ValidationError("must be COLSxROWS with 1 to 10 each, e.g. 2x4", field=field)
    return int(match[1]), int(match[2])


def check_error_correction(value: Any, field: str) -> str:
    # A list or object is unhashable: the dict test would raise, not refuse.
    if not isinstance(value, str) or value not in ERROR_CORRECTION:
        raise ValidationError("must be one of L, M, Q, H", field=field)
    return value


def check_position(value: Any, field: str) -> float | None:
    return None if value is None else _position(value, field)


_position = _number(0, 1200)

# What each named check accepts, as JSON Schema (the factories above say it themselves).
check_payload.json_schema = {"type": "string", "minLength": 1, "maxLength": MAX_DATA}
check_lines.json_schema = {"type": "array", "maxItems": MAX_LINES,
                           "items": _text(MAX_TEXT, printed=True).json_schema}
check_colors.json_schema = {"type": "object", "additionalProperties": False, "properties": {
    key: {"type": "string", "pattern": f"^{_HEX.pattern}$"} for key in ("fg", "bg")}}
check_page_size.json_schema = {"type": "string", "anyOf": [
    {"enum": list(PAGE_SIZES_MM)}, {"pattern": f"^{_SIZE.pattern}$"}]}
check_grid.json_schema = {"type": "string", "pattern": f"^{_GRID.pattern}$"}
check_error_correction.json_schema = {"type": "string", "enum": list(ERROR_CORRECTION)}
check_position.json_schema = {**_position.json_schema,
                              "type": [_position.json_schema["type"], "null"]}


# The fields a template holds and a request's options may override.
FIELDS = {f.name: f for f in (
    Field("data", "The QR payload; may use {template_id}, {domain}, {copy}, {job_id}.",
          check_payload),
    Field("title", "Title printed above the code, in Western European characters "
          "(Windows-1252).", _text(MAX_TEXT, printed=True)),
    Field("lines", f"Up to {MAX_LINES} text lines printed under the code, in Western "
          "European characters (Windows-1252).", check_lines),
    Field("size_mm", "Side of the QR code, quiet zone included, in mm (5 to 500).",
          _number(5, 500)),
    Field("qr_x_mm", "QR position from the card's left edge in mm; null centres it.",
          check_position),
    Field("qr_y_mm", "QR position from the card's bottom edge in mm; null centres it.",
          check_position),
    Field("colors", 'Colours as {"fg": "#000000", "bg": "#ffffff"}.', check_colors),
    Field("page_size", "A4, A5, Letter or WIDTHxHEIGHT in mm.", check_page_size),
    Field("grid", "Cards per page as COLSxROWS, e.g. 2x4 business cards.", check_grid),
    Field("error_correction", "QR error correction level: L, M, Q or H.",
          check_error_correction),
    Field("quiet_zone", "Blank modules around the code (0 to 20; 4 is standard).",
          _number(0, 20, integer=True)),
)}


def check_flag(value: Any, field: str) -> bool:
    if not isinstance(value, bool):
        raise ValidationError("must be true or false", field=field)
    return value


check_flag.json_schema = {"type": "boolean"}

# Options a request may give that no template holds.
OPTION_ONLY = {"copies": "How many cards to render (1 to the max_copies setting).",
               "crop_marks": "Draw crop marks in the page margin, on the line of each "
                             "cut between and around the cards, for cards to be cut out."}
_OPTION_CHECKS = {"crop_marks": check_flag}


def check_options(options: Any, max_copies: int) -> dict[str, Any]:
    """Check a request's ``options`` object; return it with ``copies`` filled in."""
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise ValidationError("must be an object", field="options")
    unknown = sorted(set(options) - set(FIELDS) - set(OPTION_ONLY))
    if unknown:
        raise ValidationError(f"unknown option {unknown[0]!r}; known: "
                              + ", ".join(sorted([*FIELDS, *OPTION_ONLY])),
                              field=f"options.{unknown[0]}")
    for name, value in options.items():
        if name in FIELDS:
            FIELDS[name].check(value, f"options.{name}")
        elif name in _OPTION_CHECKS:
            _OPTION_CHECKS[name](value, f"options.{name}")
    copies = options.get("copies", 1)
    _number(1, max_copies, integer=True)(copies, "options.copies")
    return {**options, "copies": copies}


def json_schema() -> dict[str, Any]:
    """The ``options`` object as JSON Schema, made from :data:`FIELDS`: the API document
    states the limits the checks enforce, from this one table."""
    properties = {name: {**field.check.json_schema, "description": field.help}
                  for name, field in FIELDS.items()}
    properties["copies"] = {"type": "integer", "minimum": 1,
                            "description": OPTION_ONLY["copies"]}
    properties.update({name: {**check.json_schema, "description": OPTION_ONLY[name]}
                       for name, check in _OPTION_CHECKS.items()})
    return {"type": "object", "additionalProperties": False, "properties": properties,
            "description": "Overrides of the template's fields; anything else is a 422 "
                           "naming it."}


def template_fields(template: dict[str, Any]) -> dict[str, Any]:
    """A template's stored values under the option names."""
    return {
        "data": template["payload"], "title": template["title"], "lines": template["lines"],
        "size_mm": template["qr_size_mm"], "qr_x_mm": template["qr_x_mm"],
        "qr_y_mm": template["qr_y_mm"], "colors": template["colors"],
        "page_size": template["page_size"], "grid": template["grid"],
        "error_correction": template["error_correction"],
        "quiet_zone": template["quiet_zone"],
    }


def build_spec(template: dict[str, Any], options: dict[str, Any], *,
               margin_mm: float) -> CardSpec:
    """Merge checked *options* over *template* (its ``to_dict()``) into a CardSpec whose
    cards keep *margin_mm* (the print_margin_mm setting) from every page edge.

    The grid is laid inside the margin, so the cards are that much smaller than
    page/grid; what the template states in mm (the code's size and position) is
    printed as stated or refused with a 422 naming the field, never shrunk.
    """
    values = {**template_fields(template), **options}
    # Text a template stored before it was checked must not be printed as "?" either.
    where = {name: f"options.{name}" if name in options else name for name in ("title", "lines")}
    check_printable(values["title"], where["title"])
    for i, line in enumerate(values["lines"]):
        check_printable(line, f"{where['lines']}[{i}]")
    width, height = check_page_size(values["page_size"], "page_size")
    cols, rows = check_grid(values["grid"], "grid")
    colors = {"fg": "#000000", "bg": "#ffffff", **template["colors"],
              **options.get("colors", {})}
    spec = CardSpec(
        page_width_mm=width, page_height_mm=height, cols=cols, rows=rows,
        qr_size_mm=float(values["size_mm"]), qr_x_mm=values["qr_x_mm"],
        qr_y_mm=values["qr_y_mm"], title=values["title"], lines=tuple(values["lines"]),
        fg_color=colors["fg"], bg_color=colors["bg"],
        error_correction=values["error_correction"], quiet_zone=values["quiet_zone"],
        margin_mm=margin_mm, crop_marks=options.get("crop_marks", False),
    )
    card = (f"{_mm(spec.card_width_mm)}x{_mm(spec.card_height_mm)} mm card "
            f"({values['grid']} on {_mm(width)}x{_mm(height)} mm, inside a "
            f"{_mm(spec.inset_mm)} mm page margin"
            + (" with crop marks)" if spec.crop_marks else ")"))
    named = {name: f"options.{name}" if name in options else name
             for name in ("size_mm", "qr_x_mm", "qr_y_mm")}
    largest = min(spec.card_width_mm, spec.card_height_mm)
    if spec.qr_size_mm > largest:
        raise ValidationError(f"a {spec.qr_size_mm:g} mm code does not fit a {card}; "
                              f"at most {_mm(largest)} mm", field=named["size_mm"])
    for name, offset, side in (("qr_x_mm", spec.qr_x_mm, spec.card_width_mm),
                               ("qr_y_mm", spec.qr_y_mm, spec.card_height_mm)):
        if offset is not None and offset + spec.qr_size_mm > side:
            raise ValidationError(f"a {spec.qr_size_mm:g} mm code at {offset:g} mm runs off "
                                  f"a {card}; at most {_mm(side - spec.qr_size_mm)} mm",
                                  field=named[name])
    return spec


def _mm(value: float) -> str:
    """A length for a message, rounded down to 0.1 mm (a limit stated must be allowed)."""
    return f"{math.floor(value * 10 + 1e-9) / 10:g}"


def payloads(pattern: str, copies: int, **values: Any) -> list[str]:
    """The payload of each card: *pattern* with ``{copy}`` numbered from 1."""
    return [pattern.format(copy=i, **values) for i in range(1, copies + 1)]


def check_fits(pattern: str, error_correction: str, field: str, **values: Any) -> None:
    """Refuse a payload longer than a QR code can hold (checked on the longest copy)."""
    try:
        fits_in_a_code(pattern.format(**values), error_correction)
    except DataTooLong as exc:
        raise ValidationError(str(exc), field=field) from None
