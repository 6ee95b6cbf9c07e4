"""``qrq migrate``: bring the queue's and the app database's schemas to this qrq's version."""

from __future__ import annotations

import click

from qrq.appdb.db import migrate_app_db
from qrq.cli.base import get_settings, main
from qrq.queue import huey, migrations, signing


@main.command()
def migrate() -> None:
    """Apply the schema steps the queue and app databases lack (SQLite or PostgreSQL).

    The web app and the consumer apply them too when they start; this does it on
    demand (before starting several hosts at once, say) and says what it did. A
    database migrated by a newer qrq is refused.

    Example: qrq migrate
    """
    settings = get_settings()
    huey.init(settings, migrate=False, key_check=False)  # an older schema lacks its table
    applied = huey.storage.initialize_schema()
    signing.check_key(huey.storage, huey.serializer)
    version = migrations.current_version(huey.storage)
    if applied:
        click.echo(f"queue database: applied step{'s' if len(applied) > 1 else ''} "
                   f"{', '.join(map(str, applied))}; now at version {version}")
    else:
        click.echo(f"queue database: up to date (version {version})")
    applied, version = migrate_app_db(settings)
    if applied:
        click.echo(f"app database: applied step{'s' if len(applied) > 1 else ''} "
                   f"{', '.join(map(str, applied))}; now at version {version}")
    else:
        click.echo(f"app database: up to date (version {version})")
