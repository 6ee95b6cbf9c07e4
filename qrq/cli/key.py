"""The queue's signing key: ``qrq key show``, ``qrq key adopt``."""

from __future__ import annotations

import time

import click

from qrq.backup import environment_key
from qrq.cli.base import cli_actor, echo_json, get_settings, json_option, main
from qrq.queue import audit, huey, signing

LOOKED_AT = 1000  # waiting jobs whose signatures `adopt` checks


@main.group("key")
def key_group() -> None:
    """The secret key that signs queued jobs: every host must use the queue's."""


def _open():
    """The queue, opened whatever key is in effect (these commands are how to tell)."""
    settings = get_settings()
    huey.init(settings, key_check=False)
    source = "QRQ_SECRET_KEY" if environment_key(settings) else str(settings.secret_file)
    return settings, source


@key_group.command("show")
@json_option
def key_show(as_json: bool) -> None:
    """Show the fingerprint of the key in effect and of the queue's key: one-way names
    that tell keys apart without showing them. Exits with status 1 when they differ.

    Example: qrq key show
    """
    settings, source = _open()
    mine = signing.fingerprint(settings.secret_key)
    queue = signing.recorded(huey.storage)
    same = queue is None or queue["fingerprint"] == mine
    if as_json:
        echo_json({"in_effect": {"fingerprint": mine, "source": source},
                   "queue": queue, "same": same})
    else:
        click.echo(f"key in effect: {mine} (from {source})")
        if queue is None:
            click.echo("queue's key:   not recorded yet (the next process to start records "
                       "its own)")
        else:
            when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(queue["recorded_at"]))
            click.echo(f"queue's key:   {queue['fingerprint']} (recorded by "
                       f"{queue['host'] or 'a host'} on {when})")
        if not same:
            click.echo("they differ: this host would be refused; use the queue's key, or "
                       "`qrq key adopt` if every host now uses this one")
    if not same:
        raise SystemExit(1)


@key_group.command("adopt")
@click.option("--yes", is_flag=True, help="Do not ask first.")
def key_adopt(yes: bool) -> None:
    """Record the key in effect as the queue's, after you replaced the key on purpose
    (a key that leaked): hosts with the old key are refused from then on. Jobs still
    waiting that the old key signed fail when they run, and the failed jobs it signed
    cannot be retried.

    Example: QRQ_SECRET_KEY=<the new key> qrq key adopt
    """
    settings, source = _open()
    mine = signing.fingerprint(settings.secret_key)
    queue = signing.recorded(huey.storage)
    if queue is not None and queue["fingerprint"] == mine:
        click.echo(f"the key in effect ({mine}, from {source}) is the queue's already")
        return
    waiting = huey.storage.oldest_payloads(LOOKED_AT)
    lost = sum(not huey.serializer.verifies(data) for data in waiting)
    if lost:
        click.echo(f"{lost} of the {len(waiting)} oldest waiting jobs were signed with "
                   "another key: they will fail when they run")
    if not yes:
        click.confirm(f"record the key in effect ({mine}, from {source}) as the queue's?",
                      abort=True)
    before = signing.adopt(huey.storage, huey.serializer)
    audit.record(huey.storage, cli_actor(), "key.adopt",
                 detail={"fingerprint": mine,
                         "replaced": before["fingerprint"] if before else None})
    click.echo(f"recorded: the queue's key is now {mine}; every host must use it")
