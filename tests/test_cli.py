import datetime
import json
import os
import secrets
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from qrq.appdb.db import app_db
from qrq.cli import main
from qrq.queue import catalog, huey, jobs, signing
from tests.conftest import ROOT


def test_init_demo_prints_the_demo_token_once(runner, client):
    first = runner.invoke(main, ["init", "--demo"])
    assert first.exit_code == 0, first.output
    token = first.output.strip().splitlines()[-1]
    assert token.startswith("qrq_")
    assert client.get("/api/templates", headers={"Authorization": f"Bearer {token}"}
                      ).status_code == 200
    again = runner.invoke(main, ["init", "--demo"])
    assert again.exit_code == 0 and token not in again.output
    assert "0 added" in again.output and "'demo' (a user) exists" in again.output
    # Made an admin (as `qrq dev` does), it is named as one.
    assert runner.invoke(main, ["users", "set-role", "demo", "admin"]).exit_code == 0
    assert "'demo' (an admin) exists" in runner.invoke(main, ["init", "--demo"]).output


def test_users_create_prints_the_token_last_and_stores_only_a_hash(runner, client, settings,
                                                                   backend):
    result = runner.invoke(main, ["users", "create", "carol", "--admin",
                                  "--email", "carol@example.com"])
    assert result.exit_code == 0, result.output
    token = result.output.strip().splitlines()[-1]
    if backend == "sqlite":
        assert token not in settings.app_db.read_bytes().decode("latin-1")
    else:
        with app_db.connection_context():
            rows = app_db.execute_sql('select * from "user"').fetchall()
        assert rows and token not in repr(rows)
    me = client.get("/api/me", headers={"Authorization": f"Bearer {token}"}).get_json()
    assert me["name"] == "carol" and me["is_admin"] and me["email"] == "carol@example.com"
    duplicate = runner.invoke(main, ["users", "create", "carol"])
    assert duplicate.exit_code == 1 and "already exists" in duplicate.output
    reset = runner.invoke(main, ["users", "reset-token", "carol"])
    new = reset.output.strip().splitlines()[-1]
    assert client.get("/api/me", headers={"Authorization": f"Bearer {token}"}
                      ).status_code == 401
    assert client.get("/api/me", headers={"Authorization": f"Bearer {new}"}
                      ).status_code == 200
    # A leaked token could read the webhook secret: --webhook-secret replaces it too.
    secret = client.get("/api/me/webhook", headers={"Authorization": f"Bearer {new}"}
                        ).get_json()["secret"]
    assert "secret is unchanged" in reset.output
    reset = runner.invoke(main, ["users", "reset-token", "carol", "--webhook-secret"])
    newest = reset.output.strip().splitlines()[-1]
    assert client.get("/api/me/webhook", headers={"Authorization": f"Bearer {newest}"}
                      ).get_json()["secret"] != secret


def test_templates_list_show_add(runner, templates, tmp_path):
    listed = runner.invoke(main, ["templates", "list"])
    assert "Business cards" in listed.output
    shown = json.loads(runner.invoke(main, ["templates", "show", "2", "--json"]).output)
    assert shown["grid"] == "2x4"
    path = tmp_path / "t.json"
    path.write_text(json.dumps({**shown, "id": None, "name": "Copy", "grid": "3x3",
                                "qr_size_mm": 30}))
    added = runner.invoke(main, ["templates", "add", str(path)])
    assert added.exit_code == 0 and "added template 5" in added.output
    path.write_text(json.dumps({**shown, "qr_size_mm": 400}))
    refused = runner.invoke(main, ["templates", "add", str(path)])
    assert refused.exit_code == 1 and "qr_size_mm" in refused.output
    path.write_text(json.dumps({**shown, "domain": "d" * 254}))
    too_long = runner.invoke(main, ["templates", "add", str(path)])
    assert too_long.exit_code == 1 and "domain" in too_long.output, too_long.output
    missing = runner.invoke(main, ["templates", "show", "99"])
    assert missing.exit_code == 1 and "does not exist" in missing.output


def test_pdf_enqueues_with_options_and_jobs_show_it(runner, templates):
    result = runner.invoke(main, ["pdf", "2", "--option", "copies=3", "-o", "title=Hello"])
    assert result.exit_code == 0, result.output
    job_id = result.output.split()[-1]
    job = jobs.get(huey.storage, job_id)
    assert json.loads(job["params"])["options"] == {"copies": 3, "title": "Hello"}
    assert job_id[:8] in runner.invoke(main, ["jobs", "list"]).output
    shown = json.loads(runner.invoke(main, ["jobs", "show", job_id, "--json"]).output)
    assert shown["status"] == "queued" and "traceback" in shown


def test_pdf_bad_input_exits_nonzero_and_enqueues_nothing(runner, templates):
    bad_value = runner.invoke(main, ["pdf", "2", "-o", "copies=0"])
    assert bad_value.exit_code == 1 and "options.copies" in bad_value.output
    bad_syntax = runner.invoke(main, ["pdf", "2", "-o", "copies"])
    assert bad_syntax.exit_code == 2 and "KEY=VALUE" in bad_syntax.output
    # A key given twice is refused, naming it, not the last one kept.
    twice = runner.invoke(main, ["pdf", "2", "-o", "copies=3", "-o", "title=A",
                                 "--option", "copies=5"])
    assert twice.exit_code == 2, twice.output
    assert "'copies' is given more than once" in twice.output and "--option" in twice.output
    assert "Traceback" not in twice.output
    assert huey.storage.queue_size() == 0


def test_a_text_option_takes_its_value_as_written(runner, templates):
    # JSON made title=2026 a number and data=12345 one too, which a text field refuses.
    result = runner.invoke(main, ["pdf", "2", "-o", "title=2026", "-o", "data=12345",
                                  "-o", 'lines=["x"]', "-o", "copies=3"])
    assert result.exit_code == 0, result.output
    job_id = result.output.split()[-1]
    options = json.loads(jobs.get(huey.storage, job_id)["params"])["options"]
    assert options == {"title": "2026", "data": "12345", "lines": ["x"], "copies": 3}
    quoted = runner.invoke(main, ["pdf", "2", "-o", 'title="007"'])
    assert quoted.exit_code == 0, quoted.output
    params = jobs.get(huey.storage, quoted.output.split()[-1])["params"]
    assert json.loads(params)["options"] == {"title": "007"}


@pytest.mark.parametrize("args", [["--data-dir", "", "status"],
                                  ["backup", "restore", "latest", "--to", ""],
                                  ["demo", "analytics", "--out", " "]])
def test_an_empty_path_is_refused_not_read_as_the_current_directory(runner, args, tmp_path,
                                                                    monkeypatch):
    # `--to "$QRQ_DATA_DIR"` with the variable unset restored into the current directory.
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    result = runner.invoke(main, args)
    assert result.exit_code == 2, result.output
    assert "is empty; give a path" in result.output
    assert list(here.iterdir()) == []


def test_the_readme_names_every_job_type_that_can_be_paused():
    readme = (ROOT / "README.md").read_text()
    listed = readme.split("**Pausing a job type** (", 1)[1].split(")", 1)[0]
    types = {t.job_type for t in catalog.TASKS.values() if t.job_type}
    assert {name.strip("` ") for name in listed.split(",")} == types


def test_every_command_has_help_with_text(runner):
    def walk(group, path):
        for name, command in group.commands.items():
            yield [*path, name], command
            if hasattr(command, "commands"):
                yield from walk(command, [*path, name])

    for path, command in walk(main, []):
        result = runner.invoke(main, [*path, "--help"])
        assert result.exit_code == 0, path
        assert command.help, f"qrq {' '.join(path)} has no help text"


def run_process(args, env, cwd=ROOT):
    return subprocess.run(args, env={**os.environ, **env}, cwd=cwd, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize(("variable", "value"), [
    ("QRQ_BACKUP_CODEC", "xz"), ("QRQ_WORKER_TYPE", "proc"), ("QRQ_WORKERS", "0"),
    ("QRQ_ANALYTICS_PROCESSES", "-3"), ("QRQ_SMTP_SECURITY", "tls"),
    ("QRQ_SECRET_KEY", "changeme")])
def test_every_process_refuses_to_start_on_a_bad_setting_with_one_line(tmp_path, variable,
                                                                       value):
    env = {"QRQ_DATA_DIR": str(tmp_path / "data"), variable: value}
    bin_dir = Path(sys.executable).parent
    for args in ([str(bin_dir / "qrq"), "jobs", "list"],
                 [str(bin_dir / "huey_consumer"), "huey_app.huey", "-w", "1"],
                 [sys.executable, "-c", "import web"]):
        done = run_process(args, env)
        assert done.returncode != 0, args
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in done.stderr, (args, done.stderr)
        assert lines[0].startswith(f"Error: {variable}="), (args, lines)


def test_a_consumer_refuses_a_mistyped_job_type_and_a_mistyped_name_is_named(tmp_path):
    # A typo in a host's role made it take every type (or none) without a word.
    env = {"QRQ_DATA_DIR": str(tmp_path / "data")}
    bin_dir = Path(sys.executable).parent
    assert run_process([str(bin_dir / "qrq"), "init"], env).returncode == 0
    for variable in ("QRQ_WORKER_JOB_TYPES", "QRQ_WORKER_EXCLUDE_JOB_TYPES"):
        for args in ([str(bin_dir / "qrq"), "worker", "-w", "1"],
                     [str(bin_dir / "huey_consumer"), "huey_app.huey", "-w", "1"]):
            done = run_process(args, {**env, variable: "pdf,analytic"})
            assert done.returncode == 1, (args, done.stderr)
            lines = done.stderr.strip().splitlines()
            assert lines[-1].startswith("Error: unknown job type 'analytic'") and \
                "known: analytics, batch" in lines[-1], (args, lines)
            assert "Traceback" not in done.stderr
    # A variable that is no setting is named, with the setting it may mean.
    done = run_process([str(bin_dir / "qrq"), "jobs", "list"],
                       {**env, "QRQ_WORKER_JOB_TYPE": "analytics"})
    assert done.returncode == 0
    assert "QRQ_WORKER_JOB_TYPE is not a qrq setting and is ignored (did you mean " \
        "QRQ_WORKER_JOB_TYPES?)" in done.stderr


def test_a_consumer_refuses_a_missing_artifact_store_with_one_line(tmp_path):
    env = {"QRQ_DATA_DIR": str(tmp_path / "data"),
           "QRQ_ARTIFACT_STORE": str(tmp_path / "not-mounted")}
    bin_dir = Path(sys.executable).parent
    assert run_process([str(bin_dir / "qrq"), "init"], env).returncode == 0
    for args in ([str(bin_dir / "qrq"), "worker", "-w", "1"],
                 [str(bin_dir / "huey_consumer"), "huey_app.huey", "-w", "1"]):
        done = run_process(args, env)
        assert done.returncode != 0, args
        assert done.stderr.strip().splitlines() == [
            f"Error: the artifact store {tmp_path / 'not-mounted'} does not exist or is not a "
            "directory (is the shared mount there?)"], (args, done.stderr)


def test_data_dir_without_qrq_data_is_refused_and_not_created(tmp_path, backend):
    qrq = str(Path(sys.executable).parent / "qrq")
    empty = tmp_path / "empty"
    empty.mkdir()
    if backend == "postgres":  # the data directory holds only logs: any command makes it
        done = run_process([qrq, "--data-dir", str(empty), "jobs", "list"], {})
        assert done.returncode == 0, done.stderr
        return
    unset = {k: v for k, v in os.environ.items() if k != "QRQ_DATA_DIR"}
    # Named by --data-dir, by QRQ_DATA_DIR, or the default ./data, run where there is none.
    for args, env, cwd in [*((["--data-dir", str(target)], os.environ, ROOT)
                             for target in (empty, tmp_path / "typo")),
                           ([], {**unset, "QRQ_DATA_DIR": str(tmp_path / "typo")}, ROOT),
                           ([], unset, empty)]:
        done = subprocess.run([qrq, *args, "jobs", "list"], env=env, cwd=cwd,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 1, (args, cwd, done.stdout)
        assert "not a qrq data directory; run qrq init" in done.stderr
        assert len(done.stderr.splitlines()) == 1
        # Its help needs none.
        shown = subprocess.run([qrq, *args, "jobs", "list", "--help"], env=env, cwd=cwd,
                               capture_output=True, text=True, timeout=120)
        assert shown.returncode == 0 and "Usage:" in shown.stdout
    assert list(empty.iterdir()) == [] and not (tmp_path / "typo").exists()
    fresh = tmp_path / "fresh"
    assert run_process([qrq, "--data-dir", str(fresh), "init"], {}).returncode == 0
    listed = run_process([qrq, "--data-dir", str(fresh), "jobs", "list"], {})
    assert listed.returncode == 0, listed.stderr


@pytest.mark.sqlite_only("the data directory holds the databases")
def test_backup_sets_are_read_without_a_data_directory(tmp_path, backend):
    # A new machine lists and restores the sets before it has any qrq data of its own.
    qrq = str(Path(sys.executable).parent / "qrq")
    sets = tmp_path / "backups"
    sets.mkdir()
    for command in (["backup", "list"], ["backup", "verify", "latest"]):
        done = run_process([qrq, *command], {"QRQ_DATA_DIR": str(tmp_path / "new"),
                                             "QRQ_BACKUP_DIR": str(sets)})
        assert "not a qrq data directory" not in done.stderr, (command, done.stderr)
        assert "Traceback" not in done.stderr
    assert "no backups in" in run_process(
        [qrq, "backup", "list"], {"QRQ_DATA_DIR": str(tmp_path / "new"),
                                  "QRQ_BACKUP_DIR": str(sets)}).stdout
    assert not (tmp_path / "new").exists()  # not even a secret.key: only sets were read


def test_data_dir_is_recognised_when_the_secret_comes_from_the_environment(tmp_path,
                                                                           backend):
    # On PostgreSQL such a directory holds neither databases nor secret.key.
    qrq = str(Path(sys.executable).parent / "qrq")
    data, env = tmp_path / "data", {"QRQ_SECRET_KEY": secrets.token_urlsafe(32)}
    assert run_process([qrq, "--data-dir", str(data), "init"], env).returncode == 0
    listed = run_process([qrq, "--data-dir", str(data), "jobs", "list"], env)
    assert listed.returncode == 0, listed.stderr


@pytest.mark.sqlite_only("the listen errors do not depend on the database")
def test_serve_says_in_one_line_when_it_cannot_listen(settings):
    qrq = str(Path(sys.executable).parent / "qrq")
    env = {"QRQ_DATA_DIR": str(settings.data_dir)}
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for args, reason in ((["--port", str(port)], "Address already in use"),
                             (["--host", "256.1.1.1"], "Invalid host/port")):
            done = run_process([qrq, "serve", *args], env)
            assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
            assert done.stderr.strip().splitlines()[-1].startswith(
                "Error: cannot listen on ") and reason in done.stderr


@pytest.mark.sqlite_only("app.db is a file beside queue.db")
def test_a_lost_app_database_is_refused_not_made_anew(settings, client, alice, templates):
    # Jobs were queued, then app.db went (a lost file, a mount not there): made anew, it
    # would hold no users, and every token would be refused.
    assert client.post("/api/generate-qr-pdf", json={"template_id": 1},
                       headers=alice[1]).status_code == 202
    qrq = str(Path(sys.executable).parent / "qrq")
    env = {"QRQ_DATA_DIR": str(settings.data_dir)}
    for emptied in ("", b""):
        if emptied == "":
            settings.app_db.unlink()
        else:
            settings.app_db.write_bytes(emptied)  # a 0-byte file
        for command in (["users", "list"], ["serve", "--port", "1"]):  # serve: one line, no server
            done = run_process([qrq, *command], env)
            assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
            assert "is missing or empty, but the queue beside it holds jobs" in done.stderr
            assert "users list" not in done.stdout
        assert not settings.app_db.exists() or settings.app_db.stat().st_size == 0
    # qrq init starts again on purpose, with no users.
    assert run_process([qrq, "init"], env).returncode == 0
    assert "no users" in run_process([qrq, "users", "list"], env).stdout


def test_key_show_tells_hosts_keys_apart_and_adopt_replaces_the_queues(runner, settings):
    mine = signing.fingerprint(settings.secret_key)
    shown = runner.invoke(main, ["key", "show"])
    assert shown.exit_code == 0, shown.output
    assert shown.output.count(mine) == 2 and str(settings.secret_file) in shown.output
    assert settings.secret_key not in shown.output
    new_key = secrets.token_urlsafe(32)
    other = CliRunner(env={"QRQ_DATA_DIR": str(settings.data_dir), "QRQ_SECRET_KEY": new_key})
    differ = other.invoke(main, ["key", "show", "--json"])
    assert differ.exit_code == 1
    data = json.loads(differ.output)
    assert "is not this queue's" in data["refusal"] and data["queue"]["fingerprint"] == mine
    assert data["in_effect"] == {"fingerprint": signing.fingerprint(new_key),
                                 "source": "QRQ_SECRET_KEY"}
    refused = other.invoke(main, ["status"])
    assert refused.exit_code == 1 and "qrq key adopt" in refused.output
    declined = other.invoke(main, ["key", "adopt"], input="n\n")
    assert declined.exit_code == 1
    assert json.loads(other.invoke(main, ["key", "show", "--json"]).output)["queue"][
        "fingerprint"] == mine
    adopted = other.invoke(main, ["key", "adopt"], input="y\n")
    assert adopted.exit_code == 0, adopted.output
    assert signing.fingerprint(new_key) in adopted.output
    assert other.invoke(main, ["status"]).exit_code == 0
    old = runner.invoke(main, ["status"])
    assert old.exit_code == 1 and "is not this queue's" in old.output
    huey.init(settings, key_check=False)
    rows = huey.storage.sql("select actor, detail from audit where action = 'key.adopt'",
                            results=True)
    assert len(rows) == 1 and json.loads(rows[0][1]) == {
        "fingerprint": signing.fingerprint(new_key), "replaced": mine}


def test_key_adopt_waits_for_the_consumers_to_stop_and_counts_scheduled_jobs(runner, settings):
    # A retry waiting in the schedule, signed with the queue's key: the new key cannot
    # verify it either.
    huey.storage.add_to_schedule(huey.serializer._sign(b"x"), datetime.datetime(2100, 1, 1))
    huey.create_consumer(workers=1, worker_type="thread")._register()
    other = CliRunner(env={"QRQ_DATA_DIR": str(settings.data_dir),
                           "QRQ_SECRET_KEY": secrets.token_urlsafe(32)})
    refused = other.invoke(main, ["key", "adopt", "--yes"])
    assert refused.exit_code == 1 and "stop them" in refused.output
    adopted = other.invoke(main, ["key", "adopt", "--yes", "--force"])
    assert adopted.exit_code == 0, adopted.output
    assert "1 of the 1 oldest waiting and scheduled jobs were signed with another key" \
        in adopted.output


def test_key_show_on_a_queue_without_a_record_says_whether_this_key_would_be_refused(
        runner, settings):
    # A queue from before keys were recorded, with a job waiting: the record is what
    # the next process writes, but only if its key verifies what waits.
    huey.storage.sql("delete from queue_key", commit=True)
    huey.storage.enqueue(huey.serializer._sign(b"x"))
    other = CliRunner(env={"QRQ_DATA_DIR": str(settings.data_dir),
                           "QRQ_SECRET_KEY": secrets.token_urlsafe(32)})
    shown = other.invoke(main, ["key", "show"])
    assert shown.exit_code == 1 and "not recorded yet" in shown.output
    assert "this host would be refused: the secret key in effect" in shown.output
    assert runner.invoke(main, ["key", "show"]).exit_code == 0
