"""Demo data for ``qrq init --demo``, and template creation from plain dicts."""

from __future__ import annotations

import json
from typing import Any

from qrq.appdb.models import Template, User
from qrq.cards import options as opts
from qrq.errors import ValidationError

DEMO_TEMPLATES = (
    {"name": "Table tent (A4, one large code)", "domain": "menu.qrcards.example",
     "payload": "https://{domain}/t/{template_id}/table/{copy}",
     "title": "Scan for the menu", "lines": ["Order and pay from your table"],
     "page_size": "A4", "grid": "1x1", "qr_size_mm": 120},
    {"name": "Business cards (A4, 2x4)", "domain": "cards.qrcards.example",
     "payload": "https://{domain}/c/{template_id}/{copy}",
     "title": "Jane Example", "lines": ["Head of Printing", "jane@qrcards.example"],
     "page_size": "A4", "grid": "2x4", "qr_size_mm": 40},
    {"name": "Event badges (Letter, 2x3, high error correction)",
     "domain": "events.qrcards.example", "payload": "https://{domain}/badge/{copy}",
     "title": "QRConf 2026", "lines": ["Attendee"], "page_size": "Letter", "grid": "2x3",
     "qr_size_mm": 50, "error_correction": "H", "colors": {"fg": "#1d3557", "bg": "#ffffff"}},
    {"name": "Product stickers (A4, 4x6)", "domain": "shop.qrcards.example",
     "payload": "https://{domain}/p/{copy}", "title": "", "lines": [],
     "page_size": "A4", "grid": "4x6", "qr_size_mm": 30, "quiet_zone": 2},
)

_TEMPLATE_KEYS = {"name", "domain", "payload", "title", "lines", "page_size", "grid",
                  "qr_size_mm", "qr_x_mm", "qr_y_mm", "colors", "error_correction",
                  "quiet_zone", "id"}


def add_template(fields: dict[str, Any], margin_mm: float = 0.0) -> Template:
    """Validate *fields* (as ``Template.to_dict()`` spells them) and create a template
    whose cards fit its page inside *margin_mm* (jobs check the print_margin_mm setting)."""
    if not isinstance(fields, dict):
        raise ValidationError("a template must be a JSON object")
    unknown = sorted(set(fields) - _TEMPLATE_KEYS)
    if unknown:
        raise ValidationError(f"unknown template field {unknown[0]!r}", field=unknown[0])
    for name in ("name", "domain", "payload"):
        if not isinstance(fields.get(name), str) or not fields[name].strip():
            raise ValidationError("is required", field=name)
    for name, most in (("name", 100), ("domain", 253)):
        if len(fields[name]) > most:
            raise ValidationError(f"is too long (at most {most} characters)", field=name)
    values = {
        "id": 0, "name": fields["name"], "domain": fields["domain"],
        "payload": opts.check_payload(fields["payload"], "payload"),
        "title": opts.FIELDS["title"].check(fields.get("title", ""), "title"),
        "lines": list(opts.check_lines(fields.get("lines", []), "lines")),
        "page_size": fields.get("page_size", "A4"), "grid": fields.get("grid", "1x1"),
        "qr_size_mm": opts.FIELDS["size_mm"].check(fields.get("qr_size_mm", 60), "qr_size_mm"),
        "qr_x_mm": opts.check_position(fields.get("qr_x_mm"), "qr_x_mm"),
        "qr_y_mm": opts.check_position(fields.get("qr_y_mm"), "qr_y_mm"),
        "colors": {"fg": "#000000", "bg": "#ffffff",
                   **opts.check_colors(fields.get("colors", {}), "colors")},
        "error_correction": opts.check_error_correction(
            fields.get("error_correction", "M"), "error_correction"),
        "quiet_zone": opts.FIELDS["quiet_zone"].check(fields.get("quiet_zone", 4),
                                                      "quiet_zone"),
    }
    try:
        # page size, grid, and that the code fits a card
        opts.build_spec(values, {}, margin_mm=margin_mm)
    except ValidationError as exc:
        exc.field = {"size_mm": "qr_size_mm"}.get(exc.field, exc.field)
        raise
    return Template.create(
        name=values["name"], domain=values["domain"], payload=values["payload"],
        title=values["title"], lines_json=json.dumps(values["lines"]),
        page_size=values["page_size"], grid=values["grid"],
        qr_size_mm=values["qr_size_mm"], qr_x_mm=values["qr_x_mm"],
        qr_y_mm=values["qr_y_mm"], fg_color=values["colors"]["fg"],
        bg_color=values["colors"]["bg"], error_correction=values["error_correction"],
        quiet_zone=values["quiet_zone"])


def create_templates() -> int:
    """Add the demo templates that are missing (by name); return how many were added."""
    existing = {t.name for t in Template.select(Template.name)}
    added = 0
    for fields in DEMO_TEMPLATES:
        if fields["name"] not in existing:
            add_template(fields)
            added += 1
    return added


def create_user(name: str, *, admin: bool = False) -> str | None:
    """Create the demo user; return its token, or None if it already exists.

    With *admin* (``qrq dev``) it may use the dashboard; an existing demo user is made
    an admin too.
    """
    user = User.get_or_none(User.name == name)
    if user is not None:
        if admin and not user.is_admin:
            user.is_admin = True
            user.save()
        return None
    _, token = User.create_with_token(name, admin=admin, email=f"{name}@qrcards.example")
    return token
