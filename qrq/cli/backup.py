"""Backup and maintenance commands: run, list, verify, restore."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import click

from qrq import move_to_postgres
from qrq.backup import (
    get_set,
    list_databases,
    list_sets,
    restore,
    run_backup,
    select_entries,
    verify_set,
)
from qrq.backup.postgres import CODEC as PG_CODEC
from qrq.backup.restore import QUEUE_DB
from qrq.backup.submit import submit_backup
from qrq.cli.base import (
    NonEmptyPath,
    cli_actor,
    echo_json,
    get_queue,
    get_settings,
    json_option,
    live_consumers,
    main,
)
from qrq.cli.jobs import wait_finished, wait_options
from qrq.config import holds_qrq_data
from qrq.config.load import read_settings
from qrq.health import missing_table
from qrq.humanize import format_bytes
from qrq.queue import audit, locks, retention, signing
from qrq.queue.housekeeping import submit_maintenance
from qrq.queue.postgres_connections import check_reachable
from qrq.queue.postgres_connections import where as where_url
from qrq.queue.sqlite_storage import LeasedSqliteStorage


def _mb(n: int | None) -> str:
    return "-" if n is None else format_bytes(n)


@main.group("backup")
def backup_group() -> None:
    """Back up every database (PostgreSQL's with pg_dump), check backups, restore them.

    Sets live in <data>/backups/<set id>/ (QRQ_BACKUP_DIR).
    """


@backup_group.command("run")
@wait_options(timeout=21600)
def backup_run(wait: bool, timeout: float) -> None:
    """Queue a backup of every database now (a consumer runs it).

    Example: qrq backup run --wait
    """
    huey = get_queue()
    job_id = submit_backup("manual")
    click.echo(f"queued job {job_id}")
    if not wait:
        return
    job = wait_finished(huey, job_id, "backing up", timeout, what="backup")

    result = json.loads(job["result"])
    if "skipped" in result:
        raise click.ClickException(f"backup skipped: {result['skipped']}")
    for db in result["databases"]:
        if db["status"] != "ok":
            click.echo(f"FAILED {db['name']}: {db.get('error')}", err=True)
    click.echo(f"set {result['set_id']}: {result['status']}, {result['ok']} ok, "
               f"{result['failed']} failed, {_mb(result['size'])} -> "
               f"{_mb(result['compressed_size'])} in {result['duration']:.1f}s")
    if result["failed"]:
        raise click.exceptions.Exit(1)


@backup_group.command("list")
@click.argument("set_id", required=False)
@click.option("--limit", type=click.IntRange(1, 10_000), default=30, show_default=True)
@json_option
def backup_list(set_id: str | None, limit: int, as_json: bool) -> None:
    """List backup sets, newest first, with failed databases and damaged sets; with
    SET_ID (or latest), every database of that set: status, size, duration.

    Example: qrq backup list latest
    """
    backups = get_settings(read=read_settings).backups_dir  # makes no file (MAKE_NO_FILE_FIRST)
    if set_id:
        manifest = get_set(backups, set_id)
        if as_json:
            echo_json(manifest)
            return
        click.echo(f"set {manifest['id']} ({manifest['kind']}, {manifest['created_at']}): "
                   f"{manifest['status']}")
        click.echo(f"  {'status':<6} {'database':<40} {'size':>12} {'compressed':>12} "
                   f"{'duration':>9}  error or note")
        for e in manifest["databases"]:
            click.echo(f"  {e['status']:<6} {e['name']:<40} {_mb(e.get('size')):>12} "
                       f"{_mb(e.get('compressed_size')):>12} {e['duration']:>8.2f}s"
                       f"  {e['error'] or e.get('note') or ''}")
        return
    sets = list_sets(backups)
    if as_json:
        echo_json({"sets": sets[:limit]})
        return
    if not sets:
        click.echo(f"no backups in {backups}")
        return
    click.echo(f"{'set':<20} {'created':<20}  {'kind':<9} {'status':<7} {'ok':<6}  "
               f"{'size':>12}    {'compressed':>12}  duration")
    for m in sets[:limit]:
        if m["status"] == "damaged":
            click.echo(f"{m['id']:<20} {m['created_at']}  {'?':<9} damaged  {m['error']}")
            continue
        click.echo(f"{m['id']:<20} {m['created_at']}  {m['kind']:<9} {m['status']:<7} "
                   f"{m['ok']}/{m['ok'] + m['failed']} ok  {_mb(m['size']):>12} -> "
                   f"{_mb(m['compressed_size']):>12}  {m['duration']:.1f}s")
        for e in m["databases"]:
            if e["status"] != "ok":
                click.echo(f"    failed {e['name']}: {e['error']}")


@backup_group.command("verify")
@click.argument("set_id", default="latest")
def backup_verify(set_id: str) -> None:
    """Check a set again: restore each database to a temporary file, run
    integrity_check, compare sha256 and row counts; one line per database as it is
    checked. Exit 1 if any fails.

    Example: qrq backup verify latest
    """
    settings = get_settings(read=read_settings)  # makes no file (MAKE_NO_FILE_FIRST)
    backups = settings.backups_dir
    manifest = get_set(backups, set_id)
    count, done = len(manifest["databases"]), [0]
    click.echo(f"verifying {count} database(s) of set {manifest['id']}")

    def report(entry: dict, problems: list[str]) -> None:
        done[0] += 1
        if problems:
            click.echo(f"[{done[0]}/{count}] FAILED {entry['name']}: {'; '.join(problems)}",
                       err=True)
        else:
            click.echo(f"[{done[0]}/{count}] ok     {entry['name']} ({_mb(entry.get('size'))})")

    results = verify_set(backups, manifest, report=report,
                         database_url=settings.database_url)
    bad = [name for name, problems in results.items() if problems]
    click.echo(f"set {manifest['id']}: {len(results) - len(bad)} ok, {len(bad)} failed")
    if bad:
        raise click.exceptions.Exit(1)


@backup_group.command("restore")
@click.argument("set_id")
@click.option("--to", "to_dir", required=True,
              type=NonEmptyPath(file_okay=False, path_type=Path),
              help="Directory to restore into (it gets app.db, queue.db, analytics/...).")
@click.option("--db", "names", multiple=True, metavar="NAME",
              help="Only this database (app.db, queue, analytics/shop.db, ...); repeatable.")
@click.option("--force", is_flag=True, help="Allow restoring over the live data directory "
              "(takes a safety backup first; stop the web app and consumers first).")
def backup_restore(set_id: str, to_dir: Path, names: tuple[str, ...], force: bool) -> None:
    """Restore a backup set (or some of its databases) into a directory.

    Every database is checked (sha256, integrity_check, row counts) before
    anything is replaced, one line each; a damaged set restores nothing. With
    queue.db comes secret.key, the key that verifies its payloads (unless
    QRQ_SECRET_KEY is set: it must then be the key the set was made with). Over
    the live data directory only with --force, after a safety backup, and with no
    consumer running.

    Example: qrq backup restore latest --to /tmp/restored --db app.db
    """
    settings = get_settings(read=read_settings)  # no file made yet (MAKE_NO_FILE_FIRST)
    backups = settings.backups_dir
    manifest = get_set(backups, set_id)
    entries = select_entries(manifest, names)
    to_dir = to_dir.resolve()
    # Live: a file of this installation that the restore would replace (a new machine's
    # empty data directory has none), or QRQ_DATABASE_URL's database when a dump goes
    # there and it holds an installation's rows (a new, empty database holds none).
    live = {path.resolve() for _, path in list_databases(settings) if path.exists()}
    live_files = any((to_dir / e["name"]).resolve() in live for e in entries)
    live_database = any(e["codec"] == PG_CODEC for e in entries) and _holds_installation(
        settings.database_url)
    overwrites_live = live_files or live_database
    if overwrites_live:
        settings = get_settings()  # the live installation's, with its key
    count, checked = len(entries), [0]

    def report(entry: dict, stage: str) -> None:
        if stage == "checked":
            checked[0] += 1
            click.echo(f"[{checked[0]}/{count}] checked {entry['name']} "
                       f"({_mb(entry.get('size'))})")

    def safety_backup() -> None:
        with click.progressbar(length=100, label="safety backup") as bar:
            done = [0]

            def advance(pct: float, stage: str) -> None:
                bar.update(int(pct) - done[0])
                done[0] = int(pct)

            safety = run_backup(settings, "safety", report=advance, restoring=manifest["id"])
        click.echo(f"safety backup {safety['id']}: {safety['status']} "
                   f"({safety['ok']} ok, {safety['failed']} failed)")

    with contextlib.ExitStack() as stack:
        if overwrites_live:
            if not force:
                where = (f"{to_dir} holds the live databases" if live_files else
                         f"the database of QRQ_DATABASE_URL ({where_url(settings.database_url)})"
                         " holds an installation's data")
                raise click.ClickException(f"{where}; add --force to restore over it (a "
                                           "safety backup is taken first)")
            # The live queue whatever its key: the restore checks the set's key itself.
            storage = get_queue(key_check=False).storage
            before = _recorded_key(storage)
            running = live_consumers(settings, storage)
            if running:
                raise click.ClickException("stop the consumers (and the web app) first; "
                                           "running: " + ", ".join(running))
            # No backup may start while the live files are replaced. A long lease and no
            # renewing thread: nothing may write to queue.db while it is swapped.
            holder = locks.holder_id()
            other = locks.try_lock(storage, "backup", holder, ttl=3600)
            if other is not None:
                raise click.ClickException(f"a backup is running: {other}")
            stack.callback(locks.release_lock, storage, "backup", holder)
            stack.callback(storage.close)  # the release opens the restored file afresh
        click.echo(f"checking {count} database(s) of set {manifest['id']} before "
                   "replacing anything")
        restored = restore(backups, manifest, to_dir, names, report=report,
                           # The key the restored system runs with: QRQ_SECRET_KEY
                           # wins over secret.key, even one holding the same key.
                           env_key=read_settings().secret_key or None,
                           database_url=settings.database_url,
                           before_replacing=safety_backup if overwrites_live else lambda: None)
    if any(e["name"] == QUEUE_DB or e["codec"] == PG_CODEC for e in entries):
        # The restored queue's run locks and consumers are the old system's (the backup
        # that took the set held a lock, and its job runs again there): none of them
        # runs now. Reopened: the live queue, or the one restored into another directory.
        if any(e["codec"] == PG_CODEC for e in entries) or (
                overwrites_live and not settings.database_url):
            storage = get_queue(key_check=False).storage  # the restored one, reopened
        else:  # a queue.db in another directory: the file as restored, no schema step
            storage = LeasedSqliteStorage(filename=str(to_dir / QUEUE_DB), create_tables=False)
        try:
            locks.release_all_locks(storage)
            retention.forget_consumers(storage)
        except Exception as exc:
            if not missing_table(exc):  # (a set from before those tables: none to drop)
                raise
        if overwrites_live:
            _tell_key_change(before, _recorded_key(storage))
        storage.close()
    for entry in entries:
        if entry["codec"] == PG_CODEC:
            click.echo(f"restored PostgreSQL schema {entry['schema']} (QRQ_DATABASE_URL)")
    if overwrites_live or holds_qrq_data(settings.data_dir):  # an installation to tell
        audit.record(get_queue(key_check=False).storage, cli_actor(), "backup.restore", detail={
            "set": manifest["id"], "to": str(to_dir),
            "databases": [e["name"] for e in entries]})
    for path in restored:
        click.echo(f"restored {path}")
    click.echo(f"{count} database(s) restored from {manifest['id']} into {to_dir}")


def _holds_installation(url: str) -> bool:
    """Whether the database of *url* holds an installation's rows (as ``qrq
    migrate-to-postgres`` counts them), checked to be reachable first (one line)."""
    if not url:
        return False  # the restore itself says that a dump needs a server
    check_reachable(url, timeout=10)
    return move_to_postgres.holds_installation(url)


def _recorded_key(storage) -> dict | None:
    """The queue's recorded key; None also for a queue from before keys were recorded
    (a restored set's: its tables are brought up to date when a process opens it)."""
    try:
        return signing.recorded(storage)
    except Exception as exc:
        if missing_table(exc):
            return None
        raise


def _tell_key_change(before: dict | None, after: dict | None) -> None:
    """Say so when the restored queue's key is not the one the live queue had (a set
    from before ``qrq key adopt`` brings the replaced key back)."""
    if before and after and before["fingerprint"] != after["fingerprint"]:
        click.echo(f"note: the restored queue's key ({after['fingerprint']}) is not the one "
                   f"the live queue had ({before['fingerprint']}): every host must use the "
                   "restored one (its secret.key), or replace it again with `qrq key adopt`")


@main.group("maintenance")
def maintenance_group() -> None:
    """Housekeeping: log rotation, WAL checkpoint, VACUUM when idle."""


@maintenance_group.command("run")
@wait_options(timeout=3600)
def maintenance_run(wait: bool, timeout: float) -> None:
    """Queue the weekly maintenance now (a consumer runs it).

    Example: qrq maintenance run --wait
    """
    huey = get_queue()
    job_id = submit_maintenance("manual")
    click.echo(f"queued job {job_id}")
    if wait:
        job = wait_finished(huey, job_id, "maintenance", timeout, what="maintenance")
        click.echo(json.dumps(json.loads(job["result"]), indent=2))
