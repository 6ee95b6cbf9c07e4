"""Template commands."""

from __future__ import annotations

import json

import click

from qrq.cli.base import get_app_db, get_settings, main


@main.group()
def templates() -> None:
    """List, show and add card templates."""


@templates.command("list")
def templates_list() -> None:
    """List templates."""
    from qrq.appdb.models import Template

    with get_app_db().connection_context():
        for t in Template.select().order_by(Template.id):
            click.echo(f"{t.id:>4}  {t.name:<32} {t.page_size:<8} {t.grid:<5} {t.domain}")


@templates.command("show")
@click.argument("template_id", type=int)
def templates_show(template_id: int) -> None:
    """Print a template as JSON."""
    from qrq.appdb.models import Template

    with get_app_db().connection_context():
        click.echo(json.dumps(Template.get_by_id_or_404(template_id).to_dict(), indent=2))


@templates.command("add")
@click.argument("json_file", type=click.File("r"))
def templates_add(json_file) -> None:
    """Add a template from a JSON file (fields as `qrq templates show` prints; - for stdin).

    Example: qrq templates add card.json
    """
    from qrq.demo import add_template

    try:
        fields = json.load(json_file)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="JSON_FILE") from None
    with get_app_db().connection_context():
        template = add_template(fields, get_settings().print_margin_mm)
    click.echo(f"added template {template.id}: {template.name}")

