"""Template commands."""

from __future__ import annotations

import json

import click

from qrq.appdb.models import Template
from qrq.cli.base import (
    cli_actor,
    echo_fields,
    echo_json,
    echo_table,
    get_app_db,
    get_queue,
    get_settings,
    json_option,
    main,
    shorten,
)
from qrq.demo import add_template
from qrq.queue import audit


@main.group()
def templates() -> None:
    """List, show and add card templates."""


@templates.command("list")
@json_option
def templates_list(as_json: bool) -> None:
    """List templates: id, name, page size, cards per page (grid), domain.

    Example: qrq templates list --json
    """
    with get_app_db().connection_context():
        found = [t.to_dict() for t in Template.select().order_by(Template.id)]
    if as_json:
        echo_json({"templates": found})
        return
    if not found:
        click.echo("no templates; add one: qrq templates add FILE.json (or qrq init --demo)")
        return
    echo_table(("id", "name", "page", "grid", "domain"),
               [(t["id"], shorten(t["name"], 40), t["page_size"], t["grid"],
                 shorten(t["domain"], 40)) for t in found], right=("id",))


@templates.command("show")
@click.argument("template_id", type=int)
@json_option
def templates_show(template_id: int, as_json: bool) -> None:
    """Print a template; --json prints what `qrq templates add` reads.

    Example: qrq templates show 2 --json > card.json
    """
    with get_app_db().connection_context():
        fields = Template.get_by_id_or_404(template_id).to_dict()
    if as_json:
        echo_json(fields)
        return
    echo_fields(fields)


@templates.command("add")
@click.argument("json_file", type=click.File("r"))
def templates_add(json_file) -> None:
    """Add a template from a JSON file (fields as `qrq templates show --json` prints; - for stdin).

    Example: qrq templates add card.json
    """
    try:
        fields = json.load(json_file)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="JSON_FILE") from None
    with get_app_db().connection_context():
        template = add_template(fields, get_settings().print_margin_mm)
    audit.record(get_queue().storage, cli_actor(), "template.add",
                 detail={"template": template.id, "name": template.name})
    click.echo(f"added template {template.id}: {template.name}")

