"""``qrq demo analytics`` and ``qrq analytics run|list``."""

import json
import sqlite3

import pytest

from qrq import analytics
from qrq.analytics.query import parse_query
from qrq.cli import main
from qrq.queue import huey


def test_demo_analytics_writes_realistic_databases(runner, settings):
    result = runner.invoke(main, ["demo", "analytics", "--dbs", "3", "--scans", "3000",
                                  "--days", "28", "-j", "1"])
    assert result.exit_code == 0, result.output
    paths = sorted((settings.data_dir / "analytics").glob("*.db"))
    assert [p.name for p in paths] == ["scans-000.db", "scans-001.db", "scans-002.db"]
    with sqlite3.connect(paths[0]) as conn:
        assert conn.execute("select count(*) from scans").fetchone() == (3000,)
        indexes = {row[1] for row in conn.execute("pragma index_list('scans')")}
        assert set(analytics.INDEXES) <= indexes
        templates = conn.execute("select count(*) from scans group by template_id "
                                 "order by 1 desc").fetchall()
        devices = dict(conn.execute("select device, count(*) from scans group by 1"))
        hours = dict(conn.execute("select strftime('%H', scanned_at, 'unixepoch'), count(*) "
                                  "from scans group by 1"))
        days = conn.execute("select (max(scanned_at) - min(scanned_at)) / 86400.0 "
                            "from scans").fetchone()[0]
        repeat = conn.execute("select count(*) - count(distinct visitor_hash) "
                              "from scans").fetchone()[0]
    conn.close()
    assert templates[0][0] > 10 * templates[len(templates) // 2][0]  # skewed templates
    assert set(devices) == {"ios", "android", "desktop", "other"}
    assert max(hours.values()) > 5 * min(hours.values())  # a daily rhythm
    assert 20 < days <= 28 and repeat > 1000  # returning visitors
    # The same visitor shows up in another shard.
    with sqlite3.connect(paths[1]) as other:
        other.execute("attach ? as first", (str(paths[0]),))
        shared = other.execute("select count(distinct visitor_hash) from scans where "
                               "visitor_hash in (select visitor_hash from first.scans)"
                               ).fetchone()[0]
    other.close()
    assert shared > 0


def test_run_inline_prints_a_table_and_caches_it(runner, settings):
    runner.invoke(main, ["demo", "analytics", "--dbs", "2", "--scans", "500", "-j", "1"])
    result = runner.invoke(main, ["analytics", "run", "--period", "weekly", "--inline",
                                  "--tz", "Europe/Berlin"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("bucket"))
    assert len([line for line in lines[header + 1:] if line[:2] == "20"]) == 13
    assert "top templates:" in result.output and "2 of 2 databases" in result.output
    # The result went into the cache: a plain run answers from it, as JSON too.
    cached = runner.invoke(main, ["analytics", "run", "--period", "weekly", "--tz",
                                  "Europe/Berlin", "--json"])
    assert cached.exit_code == 0, cached.output
    report = json.loads(cached.output)
    query = parse_query({"period": "weekly", "tz": "Europe/Berlin"})
    assert report["params"] == query.to_dict()
    assert huey.storage.queue_size() == 0
    listed = runner.invoke(main, ["analytics", "list"])
    assert query.key[:12] in listed.output and "fresh" in listed.output


def test_run_queues_one_job_for_identical_requests(runner, settings):
    first = runner.invoke(main, ["analytics", "run", "--period", "monthly"])
    second = runner.invoke(main, ["analytics", "run", "--period", "monthly"])
    assert first.exit_code == second.exit_code == 0, first.output + second.output
    job_id = first.output.split()[2]
    assert first.output.startswith("queued job ")
    assert second.output.startswith(f"joined the running job {job_id}")
    assert huey.storage.queue_size() == 1


@pytest.mark.slow
def test_run_wait_follows_the_job_to_the_table(runner, settings, consumer):
    runner.invoke(main, ["demo", "analytics", "--dbs", "2", "--scans", "500", "-j", "1"])
    consumer(workers=1)
    result = runner.invoke(main, ["analytics", "run", "--period", "daily", "--wait",
                                  "--timeout", "60"])
    assert result.exit_code == 0, result.output
    assert "queued job" in result.output and "top devices:" in result.output


def test_bad_options_exit_2_naming_the_option(runner, settings):
    result = runner.invoke(main, ["analytics", "run", "--tz", "Moon/Base"])
    assert result.exit_code == 2 and "--tz" in result.output
    result = runner.invoke(main, ["analytics", "run", "--from", "2026-11-30", "--to",
                                  "2026-11-01"])
    assert result.exit_code == 2 and "--from" in result.output
    assert huey.storage.queue_size() == 0


@pytest.mark.parametrize("processes", [1, 2])
def test_demo_databases_report_progress_within_each_database(tmp_path, processes):
    """`qrq demo analytics` moves its progress bar while a database is written, not
    only when one is done: a few large databases take minutes each."""
    from qrq.analytics.scans import write_demo_databases

    seen = []
    write_demo_databases(tmp_path, 2, 60_000, days=30, processes=processes,
                         progress=seen.append)
    assert seen == sorted(seen) and seen[-1] == 2
    # Reports between whole databases (in processes, both advance at once).
    assert len([done for done in seen if done != int(done)]) >= 3, seen


def test_demo_analytics_shows_a_progress_bar(runner, settings):
    result = runner.invoke(main, ["demo", "analytics", "--dbs", "2", "--scans", "500",
                                  "-j", "1"])
    assert result.exit_code == 0, result.output
    assert "writing 2 databases" in result.output and "wrote 2 databases" in result.output
