"""The queue's signing key: ``qrq key show``, ``qrq key adopt``."""

from __future__ import annotations

import time

import click

from qrq.backup import environment_key
from qrq.cli.base import (
    cli_actor,
    echo_json,
    get_queue,
    get_settings,
    json_option,
    live_consumers,
    main,
)
from qrq.queue import audit, signing

LOOKED_AT = 1000  # waiting (and scheduled) jobs whose signatures `adopt` checks


@main.group("key")
def key_group() -> None:
    """The secret key that signs queued jobs: every host must use the queue's."""


def _open():
    """The queue, opened whatever key is in effect (these commands are how to tell);
    where the key in effect comes from."""
    settings = get_settings()
    huey = get_queue(key_check=False)
    source = "QRQ_SECRET_KEY" if environment_key(settings) else str(settings.secret_file)
    return settings, huey, source


@key_group.command("show")
@json_option
def key_show(as_json: bool) -> None:
    """Show the fingerprint of the key in effect and of the queue's key: one-way names
    that tell keys apart without showing them. Exits with status 1 when this host
    would be refused.

    Example: qrq key show
    """
    settings, huey, source = _open()
    mine = huey.serializer.fingerprint
    queue = signing.recorded(huey.storage)
    refused = signing.refusal(huey.storage, huey.serializer)
    if as_json:
        echo_json({"in_effect": {"fingerprint": mine, "source": source},
                   "queue": queue, "refusal": refused})
    else:
        click.echo(f"key in effect: {mine} (from {source})")
        if queue is None:
            click.echo("queue's key:   not recorded yet (a queue made before keys were "
                       "recorded; the next process that starts records its own)")
        else:
            when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(queue["recorded_at"]))
            click.echo(f"queue's key:   {queue['fingerprint']} (recorded by "
                       f"{queue['host'] or 'a host'} on {when})")
        if refused:
            click.echo(f"this host would be refused: {refused}")
    if refused:
        raise SystemExit(1)


@key_group.command("adopt")
@click.option("--yes", is_flag=True, help="Do not ask first.")
@click.option("--force", is_flag=True, help="Even while consumers run: they stop at their "
              "next heartbeat (the jobs they take meanwhile fail; retry them).")
def key_adopt(yes: bool, force: bool) -> None:
    """Record the key in effect as the queue's, after you replaced the key on purpose
    (a key that leaked). Stop every process first (web apps and consumers), set the
    new key on every host, run this once, then start them: a process with the old key
    is refused from then on. Jobs still waiting or scheduled that the old key signed
    fail when they run, and the failed jobs it signed cannot be retried.

    Example: QRQ_SECRET_KEY=<the new key> qrq key adopt
    """
    settings, huey, source = _open()
    mine = huey.serializer.fingerprint
    queue = signing.recorded(huey.storage)
    if queue is not None and queue["fingerprint"] == mine:
        click.echo(f"the key in effect ({mine}, from {source}) is the queue's already")
        return
    running = live_consumers(settings, huey.storage)
    if running and not force:
        raise click.ClickException(
            "consumers are running with the queue's key: stop them (and the web apps) "
            "first, or add --force; running: " + ", ".join(running))
    lost, looked = signing.unverified(huey.storage, huey.serializer, LOOKED_AT)
    if lost:
        click.echo(f"{lost} of the {looked} oldest waiting and scheduled jobs were signed "
                   "with another key: they will fail when they run")
    if not yes:
        click.confirm(f"record the key in effect ({mine}, from {source}) as the queue's?",
                      abort=True)
    before = signing.adopt(huey.storage, huey.serializer)
    audit.record(huey.storage, cli_actor(), "key.adopt",
                 detail={"fingerprint": mine,
                         "replaced": before["fingerprint"] if before else None})
    click.echo(f"recorded: the queue's key is now {mine}; every host must use it")
