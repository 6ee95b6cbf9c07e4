"""The CLI as a user meets it: short job ids, --json, tables, and waiting for jobs."""

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from qrq.cli import main
from qrq.config import load_settings
from qrq.queue import huey, jobs
from tests.conftest import ROOT, wait_until
from tests.test_batch import run_job

SHORT = "5bc296e7"


def add_job(job_id, error=None):
    """A job record with a chosen id (so that prefixes can collide), as the enqueue
    writes it."""
    with huey.storage.db(commit=True) as curs:
        jobs.insert(curs, jobs.new_record(job_id, "pdf", "pdf.generate", None,
                                          {"template_id": 2}))
        if error:
            jobs.finish(curs, job_id, {"status": "failed", "error": error})


def queued_id(output):
    return next(word for line in output.splitlines() if line.startswith("queued")
                for word in line.split() if jobs.JOB_ID.fullmatch(word))


# -- short ids ------------------------------------------------------------------------

def test_a_short_id_works_in_every_job_command(runner, templates):
    queued = runner.invoke(main, ["pdf", "2"])
    job_id = queued_id(queued.output)
    short = job_id[:8]
    shown = runner.invoke(main, ["jobs", "show", short, "--json"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output)["job_id"] == job_id
    upper = runner.invoke(main, ["jobs", "show", short.upper()])
    assert upper.exit_code == 0 and job_id in upper.output
    canceled = runner.invoke(main, ["jobs", "cancel", short])
    assert canceled.exit_code == 0, canceled.output
    assert jobs.get(huey.storage, job_id)["status"] == "canceled"
    retried = runner.invoke(main, ["jobs", "retry", short])
    assert retried.exit_code == 0 and job_id in retried.output, retried.output
    assert jobs.get(huey.storage, job_id)["status"] == "queued"
    run_job(job_id)
    waited = runner.invoke(main, ["jobs", "wait", short, "--timeout", "5"])
    assert waited.exit_code == 0 and "finished" in waited.output, waited.output

    batch = runner.invoke(main, ["batch", "submit", "--template", "2", "--count", "3"])
    batch_id = queued_id(batch.output)
    run_job(batch_id)
    items = runner.invoke(main, ["batch", "items", batch_id[:8], "--json"])
    assert items.exit_code == 0, items.output
    assert json.loads(items.output)["total"] == 3


def test_an_ambiguous_prefix_lists_the_candidates_and_an_unknown_one_says_so(runner, settings):
    first, second = f"{SHORT}-0000-4000-8000-000000000001", f"{SHORT}-0000-4000-8000-000000000002"
    other = "5bc2aaaa-0000-4000-8000-000000000003"
    for job_id in (first, second, other):
        add_job(job_id)
    for args in (["jobs", "show", SHORT], ["jobs", "cancel", SHORT],
                 ["jobs", "wait", SHORT], ["batch", "items", SHORT]):
        result = runner.invoke(main, args)
        assert result.exit_code == 1, (args, result.output)
        assert f"job id {SHORT} is ambiguous: 2 jobs start with it" in result.output
        assert first in result.output and second in result.output and other not in result.output
        assert "Traceback" not in result.output
    assert jobs.get(huey.storage, first)["status"] == "queued"  # nothing was canceled
    assert runner.invoke(main, ["jobs", "show", "5bc2a"]).exit_code == 0
    assert runner.invoke(main, ["jobs", "show", first]).exit_code == 0
    many = runner.invoke(main, ["jobs", "show", "5"])
    assert "ambiguous: 3 jobs" in many.output
    for unknown in ("ffff0000", "not-hex!", ""):
        result = runner.invoke(main, ["jobs", "show", unknown])
        assert result.exit_code == 1, result.output
        assert "Error: no job" in result.output and "Traceback" not in result.output


# -- --json and tables ----------------------------------------------------------------

def test_every_list_and_show_command_has_json(runner, client, templates, make_user):
    _, admin = make_user("carol", admin=True, email="carol@example.com")
    job_id = queued_id(runner.invoke(main, ["pdf", "2"]).output)

    def as_json(*args):
        result = runner.invoke(main, [*args, "--json"])
        assert result.exit_code == 0, (args, result.output)
        return json.loads(result.output)

    assert [j["job_id"] for j in as_json("jobs", "list")["jobs"]] == [job_id]
    assert as_json("jobs", "show", job_id)["params"] == {"template_id": 2, "options": {}}
    assert [u["name"] for u in as_json("users", "list")["users"]] == ["carol"]
    assert len(as_json("templates", "list")["templates"]) == 4
    assert as_json("templates", "show", "2")["grid"] == "2x4"
    assert as_json("analytics", "list") == {"reports": []}
    assert as_json("backup", "list") == {"sets": []}
    assert as_json("status")["totals"]["queued"] == 1
    job = huey.dequeue()
    huey.execute(job)  # one attempt, in the history
    # A job is the API's status document, but for its URLs (the web app's to make).
    api = client.get(f"/api/job-status/{job_id}", headers=admin).get_json()
    shown = as_json("jobs", "show", job_id)
    assert len(shown["attempts_history"]) == 1
    assert shown == {key: value for key, value in api.items() if key != "status_url"} | {
        "result": {k: v for k, v in api["result"].items() if k != "download_url"}}

    def walk(group, path):
        for name, command in group.commands.items():
            if hasattr(command, "commands"):
                yield from walk(command, [*path, name])
            elif name in ("list", "show", "items", "status"):
                yield [*path, name], command

    lacking = [" ".join(path) for path, command in walk(main, [])
               if "--json" not in {o for p in command.params for o in p.opts}]
    assert lacking == []


def test_status_json_is_the_queue_status_document_of_the_api(runner, client, make_user,
                                                            templates):
    _, headers = make_user("root", admin=True)
    runner.invoke(main, ["pdf", "2"])
    cli = json.loads(runner.invoke(main, ["status", "--json"]).output)
    api = client.get("/api/admin/queue-status", headers=headers).get_json()
    for document in (cli, api):
        document.pop("generated_at")
        for counts in (*document["types"].values(), document["totals"]):
            counts.pop("oldest_queued_age_seconds")
    assert cli == api
    assert [alert["kind"] for alert in cli["alerts"]] == ["no_consumer"]


def test_jobs_list_pages_through_every_job(runner, templates):
    ids = [queued_id(runner.invoke(main, ["pdf", "2"]).output) for _ in range(5)]
    first = runner.invoke(main, ["jobs", "list", "--limit", "2"]).output.splitlines()
    assert [line.split()[0] for line in first[1:3]] == [i[:8] for i in ids[::-1][:2]]
    assert first[-1] == "1-2 of 5 job(s); next: --page 2"
    last = runner.invoke(main, ["jobs", "list", "--limit", "2", "--page", "3"]).output
    assert last.splitlines()[1].split()[0] == ids[0][:8]
    assert last.splitlines()[-1] == "5-5 of 5 job(s)"
    past = runner.invoke(main, ["jobs", "list", "--limit", "2", "--page", "9", "--json"])
    assert json.loads(past.output) == {"jobs": [], "total": 5, "page": 9}


def test_plain_lists_have_headers_and_shorten_long_values(runner, templates):
    add_job(f"{SHORT}-0000-4000-8000-000000000001", error="boom " * 200)
    listed = runner.invoke(main, ["jobs", "list"]).output.splitlines()
    assert listed[0].split() == ["id", "type", "status", "progress", "created", "error"]
    assert listed[1].startswith(f"{SHORT}  pdf") and listed[1].endswith("…")
    assert len(listed[1]) < 120
    # The type filter takes the API's job types only, as `GET /api/jobs?type=` does.
    assert runner.invoke(main, ["jobs", "list", "--type", "webhook"]).exit_code == 0
    wrong = runner.invoke(main, ["jobs", "list", "--type", "bogus"])
    assert wrong.exit_code == 2 and "unknown job type 'bogus'" in wrong.output
    for args, header in ((["templates", "list"], "id  name"), (["users", "list"], "no users"),
                         (["status"], "type")):
        assert runner.invoke(main, args).output.startswith(header), args
    batch = runner.invoke(main, ["batch", "submit", "--template", "2", "--count", "2",
                                 "-o", "data=" + "x" * 300])
    batch_id = queued_id(batch.output)
    run_job(batch_id)
    items = runner.invoke(main, ["batch", "items", batch_id]).output.splitlines()
    assert items[0].split() == ["idx", "status", "file", "or", "error", "data"]
    assert all(len(line) < 200 for line in items) and items[1].endswith("…")


# -- waiting --------------------------------------------------------------------------

def test_wait_stops_when_no_consumer_runs_and_keeps_waiting_only_if_asked(runner, templates):
    result = runner.invoke(main, ["pdf", "2", "--wait", "--timeout", "60"])
    assert result.exit_code == 1
    job_id = queued_id(result.output)
    assert "no consumer is running (none registered)" in result.output
    # The bar says what the job does only once it runs.
    assert "queued" in result.output.splitlines()[1] and "rendering" not in result.output
    assert f"follow it with: qrq jobs wait {job_id}" in result.output
    assert jobs.get(huey.storage, job_id)["status"] == "queued"  # the job goes on

    kept = runner.invoke(main, ["jobs", "wait", job_id[:8], "--keep-waiting",
                                "--timeout", "8"])
    assert kept.exit_code == 1
    assert "no consumer is running (none registered); waiting until one runs" in kept.output
    assert f"still queued after 8s; it goes on: follow it with: qrq jobs wait {job_id}" \
        in kept.output


def test_pdf_out_is_checked_before_the_job_and_implies_wait(runner, templates, tmp_path):
    missing = runner.invoke(main, ["pdf", "2", "--wait", "--out",
                                   str(tmp_path / "none" / "x.pdf")])
    assert missing.exit_code == 2 and "is not a directory" in missing.output, missing.output
    assert huey.storage.queue_size() == 0  # no job queued whose PDF had nowhere to go
    # --out alone waits for the PDF (here: no consumer runs, which it says at once).
    alone = runner.invoke(main, ["pdf", "2", "--out", str(tmp_path / "x.pdf")])
    assert alone.exit_code == 1 and "no consumer is running" in alone.output, alone.output


@pytest.mark.parametrize("args", [
    ["pdf", "2"], ["batch", "submit", "--template", "2", "--count", "1"],
    ["schedule", "run", "retention.purge"], ["backup", "run"], ["maintenance", "run"],
])
def test_timeout_alone_implies_wait(runner, templates, args):
    result = runner.invoke(main, [*args, "--timeout", "0"])
    assert result.exit_code == 1, result.output
    job_id = re.search(r"(?:job|batch) ([0-9a-f-]{36})", result.output)[1]
    assert (f"job {job_id} still queued after 0s; it goes on: follow it with: "
            f"qrq jobs wait {job_id}") in result.output


def test_a_wait_on_a_paused_type_says_so(runner, templates):
    from qrq.queue import pauses

    pauses.pause(huey.storage, "pdf", "olga")
    job_id = queued_id(runner.invoke(main, ["pdf", "2"]).output)
    waited = runner.invoke(main, ["jobs", "wait", job_id, "--keep-waiting", "--timeout", "2"])
    assert waited.exit_code == 1
    said = "pdf jobs are paused (by olga): the job waits until `qrq jobs resume pdf`"
    assert waited.output.count(said) == 2, waited.output  # once, and again at the end


def test_every_wait_has_timeout_and_keep_waiting(runner):
    def walk(group, path):
        for name, command in group.commands.items():
            if hasattr(command, "commands"):
                yield from walk(command, [*path, name])
            else:
                yield [*path, name], {o for p in command.params for o in p.opts}

    waiting = {" ".join(path): opts for path, opts in walk(main, [])
               if "--wait" in opts or path[-1] == "wait"}
    assert {"pdf", "batch submit", "backup run", "jobs wait"} <= set(waiting)
    assert {name for name, opts in waiting.items()
            if not {"--timeout", "--keep-waiting"} <= opts} == set()


@pytest.mark.slow
def test_ctrl_c_while_waiting_says_the_job_goes_on(tmp_path):
    env = {**os.environ, "QRQ_DATA_DIR": str(tmp_path / "data")}
    qrq = str(Path(sys.executable).parent / "qrq")
    subprocess.run([qrq, "init", "--demo"], env=env, cwd=ROOT, check=True,
                   capture_output=True)
    job_id = queued_id(subprocess.run([qrq, "pdf", "2"], env=env, cwd=ROOT, check=True,
                                      capture_output=True, text=True).stdout)
    log = tmp_path / "wait.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([qrq, "jobs", "wait", job_id[:8], "--keep-waiting"], env=env,
                                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: "waiting until one runs" in log.read_text(), timeout=60,
                   message="the no-consumer notice")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = log.read_text()
    assert f"stopped waiting; job {job_id} goes on (queued): follow it with: " \
           f"qrq jobs wait {job_id}" in output
    assert "Traceback" not in output


def test_retry_takes_a_job_id_or_all_failed(runner, settings):
    neither = runner.invoke(main, ["jobs", "retry"])
    assert neither.exit_code == 2 and "give a JOB_ID or --all-failed" in neither.output
    assert "not both" not in neither.output
    add_job(f"{SHORT}-0000-4000-8000-000000000001", error="boom")
    both = runner.invoke(main, ["jobs", "retry", SHORT, "--all-failed"])
    assert both.exit_code == 2 and "not both" in both.output


def test_waiting_outlasts_a_queue_database_that_cannot_be_reached(tmp_path):
    """A real outage: ``qrq jobs wait`` on a server of this test's own, stopped while
    the command waits and started again; the job then ends and the command says so."""
    from qrq.appdb.db import init_db
    from tests.clusters import Cluster

    cluster = Cluster()
    env = {**os.environ, "QRQ_DATABASE_URL": cluster.url, "QRQ_DATA_DIR": str(tmp_path)}
    out = tmp_path / "wait.out"
    waiting = None
    try:
        settings = load_settings(data_dir=tmp_path, database_url=cluster.url)
        settings.ensure_dirs()
        huey.init(settings)
        init_db(cluster.url)
        job_id = "5bc296e7-0000-4000-8000-00000000000f"
        add_job(job_id)
        with out.open("w") as sink:
            waiting = subprocess.Popen(
                [sys.executable, "-m", "qrq", "jobs", "wait", job_id, "--keep-waiting",
                 "--timeout", "120"], cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT)
        wait_until(lambda: "queued" in out.read_text(), timeout=60,
                   message="the command to show the job's state")
        with cluster.stopped():
            wait_until(lambda: "still waiting for job" in out.read_text(), timeout=60,
                       message="the command to say the database went")
        wait_until(lambda: "the queue database is back" in out.read_text(), timeout=60,
                   message="the command to say the database is back")
        with huey.storage.db(commit=True) as curs:
            jobs.finish(curs, job_id, {"status": "failed", "error": "it ended"})
        assert waiting.wait(timeout=60) == 1
        output = out.read_text()
        assert "job failed: it ended" in output, output
        assert output.count("still waiting") == 1 and "Traceback" not in output, output
    finally:
        if waiting is not None and waiting.poll() is None:
            waiting.kill()
            waiting.wait()
        huey.storage.dispose()
        cluster.close()
