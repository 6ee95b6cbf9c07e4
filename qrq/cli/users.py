"""User and token commands; each change is written to the audit log as ``cli:<os user>``."""

from __future__ import annotations

import click

from qrq import webhooks
from qrq.appdb.models import ROLES, User
from qrq.cli.base import (
    cli_actor,
    echo_json,
    echo_table,
    get_app_db,
    get_queue,
    json_option,
    main,
    shorten,
)
from qrq.queue import audit


@main.group()
def users() -> None:
    """Manage API users and tokens."""


@users.command("create")
@click.argument("name")
@click.option("--admin", is_flag=True, help="May see every job and use admin endpoints.")
@click.option("--operator", is_flag=True,
              help="May see the dashboard and the admin API's reads, but change nothing.")
@click.option("--email", help="Address for completion mail.")
def users_create(name: str, admin: bool, operator: bool, email: str | None) -> None:
    """Create a user; the API token is printed once, on the last line.

    Example: qrq users create alice --email alice@example.com
    """
    if admin and operator:
        raise click.UsageError("give --admin or --operator, not both")
    with get_app_db().connection_context():
        user, token = User.create_with_token(name, admin=admin, operator=operator,
                                             email=email)
    audit.record(get_queue().storage, cli_actor(), "user.create",
                 detail={"user": user.name, "role": user.role})
    role = "" if user.role == "user" else f", {user.role}"
    click.echo(f"created user {user.name!r} (id {user.id}{role})")
    click.echo(token)


def _user_named(name: str) -> User:
    user = User.get_or_none(User.name == name)
    if user is None:
        raise click.ClickException(f"no user {name!r}")
    return user


@users.command("reset-token")
@click.argument("name")
@click.option("--webhook-secret", is_flag=True,
              help="Replace the user's webhook secret too: whoever had the old token could "
                   "read it (GET /api/me/webhook) and sign webhooks as qrq.")
def users_reset_token(name: str, webhook_secret: bool) -> None:
    """Replace a user's API token; the new one is printed once, on the last line."""
    with get_app_db().connection_context():
        user = _user_named(name)
        token = user.reset_token()
    storage = get_queue().storage
    audit.record(storage, cli_actor(), "user.reset_token", detail={"user": name})
    click.echo(f"new token for {name!r}; the old one no longer works")
    if webhook_secret:
        webhooks.replace_secret(storage, user.id)
        audit.record(storage, cli_actor(), "webhook.replace_secret", detail={"user": name})
        click.echo("their webhook secret is replaced too: give their receivers the new one "
                   "(GET /api/me/webhook)")
    else:
        click.echo("their webhook secret is unchanged (--webhook-secret replaces it)")
    click.echo(token)


@users.command("set-role")
@click.argument("name")
@click.argument("role", type=click.Choice(ROLES))
def users_set_role(name: str, role: str) -> None:
    """Make a user an admin, an operator (sees the dashboard, changes nothing) or a
    plain API user; their dashboard sessions follow at once.

    Example: qrq users set-role carol operator
    """
    with get_app_db().connection_context():
        user = _user_named(name)
        before = user.role
        user.set_role(role)
    audit.record(get_queue().storage, cli_actor(), "user.set_role",
                 detail={"user": name, "role": role, "was": before})
    click.echo(f"{name!r} is now {'an' if role in ('admin', 'operator') else 'a'} {role} "
               f"(was {before})")


@users.command("list")
@json_option
def users_list(as_json: bool) -> None:
    """List users: id, name, e-mail address, role (user, operator or admin).

    Example: qrq users list --json
    """
    with get_app_db().connection_context():
        found = [user.to_dict() for user in User.select().order_by(User.id)]
    if as_json:
        echo_json({"users": found})
        return
    if not found:
        click.echo("no users; create one: qrq users create NAME [--admin | --operator]")
        return
    echo_table(("id", "name", "email", "role"),
               [(u["id"], shorten(u["name"], 30), shorten(u["email"], 40), u["role"])
                for u in found], right=("id",))
