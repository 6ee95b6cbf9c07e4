"""Backups on real SQLite files: consistency under writes, failures, restore, space."""

import dataclasses
import json
import os
import sqlite3
import threading

import pytest

from qrq import backup
from qrq.backup import (
    InsufficientSpace,
    get_set,
    list_sets,
    restore,
    run_backup,
    verify_set,
)
from tests.conftest import wait_until


def make_db(path, rows=200, blob=64, index=True):
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    conn.execute("pragma journal_mode=wal")
    conn.execute("create table scan (id integer primary key, card integer, ua text, data blob)")
    if index:
        conn.execute("create index scan_card on scan (card)")
    conn.execute("with recursive n(i) as (select 1 union all select i + 1 from n where i < ?) "
                 "insert into scan (card, ua, data) select abs(random()) % 97, "
                 "'Mozilla/5.0 (iPhone) ' || i, randomblob(?) from n", (rows, blob))
    conn.commit()
    conn.close()
    return path


def corrupt(path, page_size=4096):
    """Overwrite pages in the middle of a database with garbage."""
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        fh.seek((size // page_size // 2) * page_size)
        fh.write(os.urandom(page_size * 3))


@pytest.fixture
def analytics(settings):
    folder = settings.data_dir / "analytics"
    return [make_db(folder / f"shop{i}.db", rows=300 + i) for i in range(3)]


def test_backup_while_a_writer_inserts_restores_a_consistent_prefix(settings, tmp_path):
    src = make_db(settings.data_dir / "analytics" / "busy.db", rows=20_000, blob=200)
    conn = sqlite3.connect(src)
    conn.execute("create table log (seq integer primary key, total integer not null)")
    conn.commit()
    conn.close()
    stop, written = threading.Event(), [0]

    def writer():
        db = sqlite3.connect(src, timeout=10)
        n = 0
        while not stop.is_set():
            n += 1
            # Two tables in one transaction: a torn copy would show them disagreeing.
            with db:
                db.execute("insert into log (seq, total) values (?, ?)", (n, n * (n + 1) // 2))
                db.execute("insert into scan (card, ua, data) values (?, 'w', randomblob(300))",
                           (n,))
            written[0] = n
        db.close()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        wait_until(lambda: written[0] > 50, message="writes before the backup")
        manifests = [run_backup(settings), run_backup(settings)]
        before_stop = written[0]
    finally:
        stop.set()
        thread.join()
    assert written[0] >= before_stop > 50
    for manifest in manifests:
        entry = next(e for e in manifest["databases"] if e["name"] == "analytics/busy.db")
        assert entry["status"] == "ok", entry
        out = tmp_path / manifest["id"]
        restore(settings.backups_dir, manifest, out, ["busy"])
        copy = sqlite3.connect(out / "analytics" / "busy.db")
        assert copy.execute("pragma integrity_check").fetchone() == ("ok",)
        seqs = [s for s, in copy.execute("select seq from log order by seq")]
        assert seqs == list(range(1, len(seqs) + 1))  # a prefix: no gaps
        assert 0 < len(seqs) < written[0]  # taken while the writer was still going
        totals = copy.execute("select total from log where seq = ?", (seqs[-1],)).fetchone()
        assert totals == (len(seqs) * (len(seqs) + 1) // 2,)
        assert copy.execute("select count(*) from scan where ua = 'w'").fetchone() == (
            len(seqs),)
        assert entry["tables"] == {"log": len(seqs), "scan": 20_000 + len(seqs)}
        copy.close()


@pytest.mark.sqlite_only("backs up queue.db and app.db as files; PostgreSQL's dump: "
                         "tests/test_backup_postgres.py")
def test_a_corrupt_database_fails_and_the_others_are_backed_up(settings, analytics):
    corrupt(make_db(settings.data_dir / "analytics" / "broken.db", rows=5000, blob=300))
    (settings.data_dir / "analytics" / "garbage.db").write_bytes(os.urandom(10_000))
    manifest = run_backup(settings)
    status = {e["name"]: e for e in manifest["databases"]}
    assert {n for n, e in status.items() if e["status"] == "ok"} == {
        "app.db", "queue.db", "analytics/shop0.db", "analytics/shop1.db", "analytics/shop2.db"}
    assert status["analytics/broken.db"]["status"] == "failed"
    assert status["analytics/broken.db"]["error"]
    assert "not a database" in status["analytics/garbage.db"]["error"]
    assert manifest["status"] == "partial" and manifest["failed"] == 2
    set_dir = settings.backups_dir / manifest["id"]
    assert not (set_dir / "analytics" / "broken.db.zst").exists()  # never kept as good
    assert (set_dir / "analytics" / "shop1.db.zst").is_file()
    assert sorted(p.name for p in set_dir.rglob("*") if p.name.startswith(".")) == []
    saved = json.loads((set_dir / "manifest.json").read_text())
    assert {e["name"]: e for e in saved["databases"]}["app.db"]["sha256"] and saved == manifest
    verified = verify_set(settings.backups_dir, manifest)
    assert {n for n, problems in verified.items() if not problems} == {
        n for n, e in status.items() if e["status"] == "ok"}
    assert verified["analytics/garbage.db"][0].startswith("not in the set: its backup failed")


def test_manifest_counts_rows_per_table_and_gzip_works_too(settings, analytics):
    manifest = run_backup(dataclasses.replace(settings, backup_codec="gzip", backup_threads=1))
    entry = next(e for e in manifest["databases"] if e["name"] == "analytics/shop2.db")
    assert entry["tables"] == {"scan": 302}
    assert entry["file"].endswith(".db.gz") and entry["size"] > entry["compressed_size"]
    assert verify_set(settings.backups_dir, manifest)["analytics/shop2.db"] == []


def test_verify_reports_a_damaged_backup_file(settings, runner, analytics):
    from qrq.cli import main

    manifest = run_backup(settings)
    assert runner.invoke(main, ["backup", "verify"]).exit_code == 0
    packed = settings.backups_dir / manifest["id"] / "analytics" / "shop0.db.zst"
    data = bytearray(packed.read_bytes())
    data[len(data) // 2] ^= 0xFF
    packed.write_bytes(bytes(data))
    result = runner.invoke(main, ["backup", "verify", manifest["id"]])
    assert result.exit_code == 1
    assert "FAILED analytics/shop0.db" in result.output and "2 ok" not in result.output


def test_a_run_that_dies_leaves_the_last_good_set_alone(settings, analytics):
    good = run_backup(settings)
    calls = []

    def crash(pct, stage):
        calls.append(stage)
        if len(calls) == 3:
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        run_backup(settings, report=crash)
    assert [m["id"] for m in list_sets(settings.backups_dir)] == [good["id"]]
    assert [p.name for p in settings.backups_dir.iterdir()] == [good["id"]]
    # A crash that left a partial directory: never listed, removed by the next run.
    (settings.backups_dir / ".partial-20260101T000000Z").mkdir()
    (settings.backups_dir / ".partial-20260101T000000Z" / "manifest.json").write_text("{}")
    assert [m["id"] for m in list_sets(settings.backups_dir)] == [good["id"]]
    run_backup(settings)
    assert not (settings.backups_dir / ".partial-20260101T000000Z").exists()
    assert get_set(settings.backups_dir, "latest")["id"] != good["id"]


def test_a_backup_that_would_not_fit_fails_before_writing(settings):
    huge = make_db(settings.data_dir / "analytics" / "huge.db")
    free = os.statvfs(huge).f_bavail * os.statvfs(huge).f_frsize
    with open(huge, "r+b") as fh:  # sparse: claims more bytes than the disk has free
        fh.truncate(free * 2)
    with pytest.raises(InsufficientSpace, match="MiB free"):
        run_backup(settings)
    assert not settings.backups_dir.exists() or not any(settings.backups_dir.iterdir())


@pytest.mark.sqlite_only("backs up queue.db and app.db as files; PostgreSQL's dump: "
                         "tests/test_backup_postgres.py")
def test_restore_into_a_directory_and_one_database(settings, runner, analytics, tmp_path):
    from qrq.cli import main

    run_backup(settings)
    out = tmp_path / "restored"
    result = runner.invoke(main, ["backup", "restore", "latest", "--to", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.db")) == [
        "analytics/shop0.db", "analytics/shop1.db", "analytics/shop2.db", "app.db", "queue.db"]
    conn = sqlite3.connect(out / "analytics" / "shop1.db")
    assert conn.execute("select count(*) from scan").fetchone() == (301,)
    conn.close()
    only = tmp_path / "only"
    result = runner.invoke(main, ["backup", "restore", "latest", "--to", str(only),
                                  "--db", "shop2"])
    assert result.exit_code == 0, result.output
    assert [p.name for p in only.rglob("*.db")] == ["shop2.db"]
    unknown = runner.invoke(main, ["backup", "restore", "latest", "--to", str(only),
                                   "--db", "nope"])
    assert unknown.exit_code == 1 and "'nope' matches 0 databases" in unknown.output


@pytest.mark.sqlite_only("backs up queue.db and app.db as files; PostgreSQL's dump: "
                         "tests/test_backup_postgres.py")
def test_restore_over_the_live_data_needs_force_and_takes_a_safety_backup(
        settings, runner, analytics):
    from qrq.cli import main

    first = run_backup(settings)
    live = settings.data_dir / "analytics" / "shop0.db"
    conn = sqlite3.connect(live)
    conn.execute("delete from scan")
    conn.commit()
    conn.close()
    refused = runner.invoke(main, ["backup", "restore", first["id"], "--to",
                                   str(settings.data_dir), "--db", "shop0"])
    assert refused.exit_code == 1 and "--force" in refused.output
    conn = sqlite3.connect(settings.queue_db)
    conn.execute("insert into consumer (id, host, pid, started_at, heartbeat_at) values "
                 "('c1', 'box', 1, strftime('%s'), strftime('%s'))")
    conn.commit()
    busy = runner.invoke(main, ["backup", "restore", first["id"], "--to",
                                str(settings.data_dir), "--db", "shop0", "--force"])
    assert busy.exit_code == 1 and "stop the consumers" in busy.output
    conn.execute("delete from consumer")
    conn.commit()
    conn.close()
    done = runner.invoke(main, ["backup", "restore", first["id"], "--to",
                                str(settings.data_dir), "--db", "shop0", "--force"])
    assert done.exit_code == 0, done.output
    safety = [m for m in list_sets(settings.backups_dir) if m["kind"] == "safety"]
    assert len(safety) == 1 and safety[0]["status"] == "ok"
    assert safety[0]["restoring"] == first["id"]  # kept as long as the safety set
    shop0 = next(e for e in safety[0]["databases"] if e["name"] == "analytics/shop0.db")
    assert shop0["tables"] == {"scan": 0}  # the safety copy holds the state before
    conn = sqlite3.connect(live)
    assert conn.execute("select count(*) from scan").fetchone() == (300,)
    conn.close()


@pytest.mark.sqlite_only("backs up queue.db and app.db as files; PostgreSQL's dump: "
                         "tests/test_backup_postgres.py")
def test_list_shows_sets_and_their_databases(settings, runner, analytics):
    from qrq.cli import main

    corrupt(make_db(settings.data_dir / "analytics" / "broken.db", rows=5000, blob=300))
    manifest = run_backup(settings)
    listed = runner.invoke(main, ["backup", "list"])
    assert listed.exit_code == 0
    assert manifest["id"] in listed.output and "5/6 ok" in listed.output
    assert "failed analytics/broken.db" in listed.output
    detail = runner.invoke(main, ["backup", "list", "latest"])
    assert "ok     analytics/shop1.db" in detail.output
    assert "failed analytics/broken.db" in detail.output


@pytest.mark.sqlite_only("backs up queue.db and app.db as files; PostgreSQL's dump: "
                         "tests/test_backup_postgres.py")
def test_databases_come_from_the_analytics_setting(settings, analytics, tmp_path):
    elsewhere = make_db(tmp_path / "elsewhere" / "x.db")
    names = [n for n, _ in backup.list_databases(settings)]
    assert names == ["app.db", "queue.db", "analytics/shop0.db", "analytics/shop1.db",
                     "analytics/shop2.db"]
    if not hasattr(settings, "analytics_dbs"):
        pytest.skip("the analytics_dbs setting is not there yet")
    moved = dataclasses.replace(settings, analytics_dbs=str(elsewhere.parent))
    assert [n for n, _ in backup.list_databases(moved)] == ["app.db", "queue.db",
                                                           "analytics/x.db"]
    everything = dataclasses.replace(settings, analytics_dbs="**/*.db")
    assert [n for n, _ in backup.list_databases(everything)] == names  # no duplicates


@pytest.mark.sqlite_only("backs up queue.db and app.db as files; PostgreSQL's dump: "
                         "tests/test_backup_postgres.py")
def test_a_second_backup_reuses_unchanged_databases_and_backs_up_changed_ones(
        settings, runner, analytics, monkeypatch):
    from qrq.cli import main

    # by sha256, not by file times
    monkeypatch.setattr(backup.selection, "SETTLED_NS", 3600 * 10**9)
    first = run_backup(settings)
    with sqlite3.connect(analytics[1]) as conn:
        conn.execute("insert into scan (card, ua, data) values (1, 'new', x'00')")
    conn.close()
    second = run_backup(settings)
    entries = {e["name"]: e for e in second["databases"]}
    changed = entries["analytics/shop1.db"]
    assert changed["status"] == "ok" and "reused_from" not in changed
    assert changed["tables"] == {"scan": 302}
    old, new = settings.backups_dir / first["id"], settings.backups_dir / second["id"]
    for name in ("analytics/shop0.db", "analytics/shop2.db"):
        entry = entries[name]
        assert entry["status"] == "ok" and entry["reused_from"] == first["id"]
        assert entry["note"] == f"reused from set {first['id']}"
        assert (new / entry["file"]).samefile(old / entry["file"])  # a hard link
    assert not (new / changed["file"]).samefile(old / changed["file"])
    assert second["reused"] >= 2
    listing = runner.invoke(main, ["backup", "list", second["id"]])
    assert f"reused from set {first['id']}" in listing.output

    # Retention deletes the first set; the files the second set shares with it stay.
    keep_one = dataclasses.replace(settings, backup_keep_daily=1, backup_keep_weekly=0,
                                   backup_keep_monthly=0)
    assert backup.apply_retention(keep_one) == [first["id"]]
    assert not old.exists()
    assert verify_set(settings.backups_dir, second) == {n: [] for n in entries}
    restored = restore(settings.backups_dir, second, settings.data_dir.parent / "restored",
                       ["analytics/shop0.db"])
    conn = sqlite3.connect(restored[0])
    assert conn.execute("select count(*) from scan").fetchone() == (300,)
    conn.close()
    third = run_backup(settings)
    assert {e["name"]: e.get("reused_from") for e in third["databases"]}[
        "analytics/shop1.db"] == second["id"]


@pytest.mark.sqlite_only("backs up queue.db and app.db as files; PostgreSQL's dump: "
                         "tests/test_backup_postgres.py")
def test_settled_unchanged_databases_are_reused_without_a_snapshot(settings, analytics,
                                                                  monkeypatch):
    """The quick check: same size, inode and mtime as at the last backup, which were
    then settled, means no snapshot at all; any write (to the file or only to its
    WAL) means a snapshot again."""
    snapshots = []
    real_snapshot = backup.runs.snapshot
    monkeypatch.setattr(backup.runs, "snapshot",
                        lambda src, dest, timeout: (snapshots.append(src.name),
                                                    real_snapshot(src, dest, timeout)))
    # instead of waiting 2 s for files to age
    monkeypatch.setattr(backup.selection, "SETTLED_NS", 0)
    writer = sqlite3.connect(analytics[2])  # stays open: its writes stay in the WAL
    writer.execute("insert into scan (card, ua, data) values (1, 'in the wal', x'00')")
    writer.commit()
    assert os.path.getsize(f"{analytics[2]}-wal") > 0

    first = run_backup(settings)
    assert {"shop0.db", "shop1.db", "shop2.db"} <= set(snapshots)
    entries = {e["name"]: e for e in first["databases"]}
    assert entries["analytics/shop2.db"]["source_state"]["wal"] is not None

    snapshots.clear()
    second = run_backup(settings)
    assert not {"shop0.db", "shop1.db", "shop2.db"} & set(snapshots)
    for entry in second["databases"]:
        if entry["name"].startswith("analytics/"):
            before = entries[entry["name"]]
            assert entry["status"] == "ok" and entry["reused_from"] == first["id"]
            assert entry["note"] == (f"reused from set {first['id']}: unchanged since "
                                     "(same size and mtime)")
            assert (entry["tables"], entry["size"], entry["db_sha256"]) == (
                before["tables"], before["size"], before["db_sha256"])
    assert {e["name"]: e["tables"] for e in second["databases"]}[
        "analytics/shop2.db"] == {"scan": 303}

    writer.execute("insert into scan (card, ua, data) values (2, 'wal only', x'00')")
    writer.commit()  # the WAL grows; the database file itself is not touched
    with sqlite3.connect(analytics[0]) as conn:
        conn.execute("insert into scan (card, ua, data) values (3, 'checkpointed', x'00')")
    conn.close()
    snapshots.clear()
    third = run_backup(settings)
    writer.close()
    now = {e["name"]: e for e in third["databases"]}
    assert {"shop0.db", "shop2.db"} <= set(snapshots) and "shop1.db" not in snapshots
    assert now["analytics/shop2.db"]["tables"] == {"scan": 304}
    assert now["analytics/shop0.db"]["tables"] == {"scan": 301}
    assert "reused_from" not in now["analytics/shop0.db"]
    assert now["analytics/shop1.db"]["reused_from"] == second["id"]
    assert verify_set(settings.backups_dir, third) == {n: [] for n in now}


def test_recently_changed_files_are_snapshotted_next_time(settings, analytics, monkeypatch):
    """Files changed within SETTLED_NS of a backup are not trusted by their times."""
    monkeypatch.setattr(backup.selection, "SETTLED_NS", 3600 * 10**9)  # the files are minutes old
    first = run_backup(settings)
    assert not any(e.get("source_state") for e in first["databases"]
                   if e["name"].startswith("analytics/"))
    snapshots = []
    real_snapshot = backup.runs.snapshot
    monkeypatch.setattr(backup.runs, "snapshot",
                        lambda src, dest, timeout: (snapshots.append(src.name),
                                                    real_snapshot(src, dest, timeout)))
    second = run_backup(settings)
    assert {"shop0.db", "shop1.db", "shop2.db"} <= set(snapshots)
    assert all(e["note"] == f"reused from set {first['id']}" for e in second["databases"]
               if e["name"].startswith("analytics/"))


def test_a_damaged_previous_file_is_not_reused(settings, analytics):
    first = run_backup(settings)
    packed = settings.backups_dir / first["id"] / "analytics" / "shop0.db.zst"
    data = bytearray(packed.read_bytes())
    data[len(data) // 2] ^= 0xFF
    packed.write_bytes(bytes(data))
    second = run_backup(settings)
    entries = {e["name"]: e for e in second["databases"]}
    assert "reused_from" not in entries["analytics/shop0.db"]
    assert entries["analytics/shop2.db"]["reused_from"] == first["id"]
    assert verify_set(settings.backups_dir, second)["analytics/shop0.db"] == []
