"""User and token commands."""

from __future__ import annotations

import click

from qrq.appdb.models import User
from qrq.cli.base import echo_json, echo_table, get_app_db, json_option, main, shorten


@main.group()
def users() -> None:
    """Manage API users and tokens."""


@users.command("create")
@click.argument("name")
@click.option("--admin", is_flag=True, help="May see every job and use admin endpoints.")
@click.option("--email", help="Address for completion mail.")
def users_create(name: str, admin: bool, email: str | None) -> None:
    """Create a user; the API token is printed once, on the last line.

    Example: qrq users create alice --email alice@example.com
    """
    with get_app_db().connection_context():
        user, token = User.create_with_token(name, admin=admin, email=email)
    click.echo(f"created user {user.name!r} (id {user.id}{', admin' if admin else ''})")
    click.echo(token)


@users.command("reset-token")
@click.argument("name")
def users_reset_token(name: str) -> None:
    """Replace a user's API token; the new one is printed once, on the last line."""
    with get_app_db().connection_context():
        user = User.get_or_none(User.name == name)
        if user is None:
            raise click.ClickException(f"no user {name!r}")
        token = user.reset_token()
    click.echo(f"new token for {name!r}; the old one no longer works")
    click.echo(token)


@users.command("list")
@json_option
def users_list(as_json: bool) -> None:
    """List users: id, name, e-mail address, admin or not.

    Example: qrq users list --json
    """
    with get_app_db().connection_context():
        found = [user.to_dict() for user in User.select().order_by(User.id)]
    if as_json:
        echo_json({"users": found})
        return
    if not found:
        click.echo("no users; create one: qrq users create NAME [--admin]")
        return
    echo_table(("id", "name", "email", "admin"),
               [(u["id"], shorten(u["name"], 30), shorten(u["email"], 40),
                 "yes" if u["is_admin"] else "no") for u in found], right=("id",))
