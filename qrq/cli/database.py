"""Moving qrq's databases: ``qrq migrate-to-postgres``."""

from __future__ import annotations

import click

from qrq import move_to_postgres
from qrq.cli.base import get_app_db, get_queue, get_settings, main
from qrq.queue import signing


@main.command("migrate-to-postgres")
def migrate_to_postgres() -> None:
    """Copy this installation's SQLite databases (queue.db, app.db) into the empty
    PostgreSQL database of QRQ_DATABASE_URL.

    Stop the consumers and the web app first (a fresh consumer heartbeat refuses the
    move). Every table is copied in one transaction and its rows counted on both
    sides; leases are cleared, so jobs that were running run again. The SQLite files
    are left as they were, and a note beside them makes qrq refuse them without
    QRQ_DATABASE_URL (their queued jobs would run twice). Afterwards start everything
    with QRQ_DATABASE_URL set.

    Example: QRQ_DATABASE_URL=postgresql://qrq@db/qrq qrq migrate-to-postgres
    """
    settings = get_settings()
    if not settings.database_url:
        raise click.ClickException("set QRQ_DATABASE_URL to the (empty) PostgreSQL "
                                   "database to move to")
    sources = [path for path in (settings.queue_db, settings.app_db) if path.is_file()]
    if not sources:
        raise click.ClickException(f"no queue.db or app.db in {settings.data_dir}")
    if settings.queue_db.is_file():
        running = move_to_postgres.live_consumers(settings.queue_db,
                                                  2 * settings.lease_seconds)
        if running:
            raise click.ClickException("stop the consumers (and the web app) first; "
                                       "running: " + ", ".join(running))
    # The queue's tables and the app's, made in PostgreSQL as on first start. Whatever
    # key a process that looked at the empty database recorded: the copy replaces it.
    huey = get_queue(key_check=False)
    get_app_db()
    huey.storage.close()
    click.echo(f"copying {', '.join(p.name for p in sources)} into PostgreSQL")
    frozen = settings.queue_db.is_file()
    if frozen:  # from now on a web app left running cannot queue a job here
        move_to_postgres.freeze(settings.queue_db)
    try:
        copied = move_to_postgres.move(sources, settings.database_url,
                                       report=lambda table, rows: click.echo(
                                           f"  {table}: {rows} rows"))
    except BaseException:
        if frozen:
            move_to_postgres.thaw(settings.queue_db)
        raise
    move_to_postgres.mark_moved(settings.moved_marker, settings.database_url)
    try:  # the moved queue's key (recorded now if the SQLite queue had no record)
        signing.check_key(huey.storage, huey.serializer)
    except signing.WrongKey as exc:
        click.echo(f"note: {exc.message}")
    click.echo(f"done: {len(copied)} tables, {sum(copied.values())} rows, counts checked; "
               "start the consumers and the web app with QRQ_DATABASE_URL set "
               f"(without it, qrq now refuses these files: {settings.moved_marker.name})")
