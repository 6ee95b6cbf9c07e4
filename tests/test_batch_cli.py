"""``qrq batch``: submit, items, retry-failed (jobs run here through real storage)."""

import json

from qrq import batch
from qrq.cli import main
from qrq.queue import huey
from tests.test_batch import run_job


def queued_id(output):
    line = next(line for line in output.splitlines() if line.startswith("queued batch"))
    return line.split()[2]


def test_submit_count_then_list_items(runner, templates, make_user):
    make_user("carol", email="carol@example.com")
    result = runner.invoke(main, ["batch", "submit", "--template", "2", "--count", "12",
                                  "-o", "title=Carol", "--user", "carol"])
    assert result.exit_code == 0, result.output
    job_id = queued_id(result.output)
    assert "(12 items)" in result.output
    assert batch.get_batch(huey.storage, job_id)["owner_id"] is not None
    assert run_job(job_id)["status"] == "finished"
    listed = runner.invoke(main, ["batch", "items", job_id, "--per-page", "5"])
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    assert lines[1].split()[:3] == ["0", "ok", "00000-cards.qrcards.example-c-2-1.svg"]
    assert lines[-1] == "5 of 12 item(s)"
    failed = runner.invoke(main, ["batch", "items", job_id, "--failed"])
    assert failed.output.strip() == "0 of 0 item(s) failed"
    # `qrq jobs show --json` is the API's status document: a batch's counts too.
    shown = json.loads(runner.invoke(main, ["jobs", "show", job_id, "--json"]).output)
    assert (shown["completed"], shown["failed"], shown["total"]) == (12, 0, 12)


def test_submit_with_png_formats_lists_png_files(runner, templates):
    result = runner.invoke(main, ["batch", "submit", "--template", "2", "--count", "2",
                                  "-o", 'formats=["png"]'])
    assert result.exit_code == 0, result.output
    job_id = queued_id(result.output)
    assert run_job(job_id)["status"] == "finished"
    listed = runner.invoke(main, ["batch", "items", job_id])
    assert listed.output.splitlines()[2].split()[:3] == [
        "1", "ok", "00001-cards.qrcards.example-c-2-2.png"], listed.output
    bad = runner.invoke(main, ["batch", "submit", "--template", "2", "--count", "2",
                               "-o", "formats=gif"])
    assert bad.exit_code != 0 and "options.formats" in bad.output, bad.output


def test_csv_items_failed_listing_and_retry(runner, templates, tmp_path):
    path = tmp_path / "codes.csv"
    path.write_text("template_id,data\n1,https://a.example/1\n3," + "q" * 3000
                    + "\n1,https://a.example/3\n")
    result = runner.invoke(main, ["batch", "submit", "--csv", str(path)])
    assert result.exit_code == 0, result.output
    job_id = queued_id(result.output)
    run_job(job_id)
    failed = runner.invoke(main, ["batch", "items", job_id, "--failed", "--json"])
    body = json.loads(failed.output)
    assert [item["idx"] for item in body["items"]] == [1] and body["total"] == 1
    assert "do not fit" in body["items"][0]["error"]
    retry = runner.invoke(main, ["batch", "retry-failed", job_id])
    assert retry.exit_code == 0, retry.output
    assert "(1 failed items of" in retry.output


def test_bad_arguments_and_bad_input(runner, templates, tmp_path, settings):
    both = runner.invoke(main, ["batch", "submit", "--template", "1", "--count", "2",
                                "--csv", __file__])
    assert both.exit_code == 2
    neither = runner.invoke(main, ["batch", "submit", "--template", "1"])
    assert neither.exit_code == 2
    path = tmp_path / "bad.csv"
    path.write_text("url\nhttps://x.example\n")
    no_column = runner.invoke(main, ["batch", "submit", "--csv", str(path)])
    assert no_column.exit_code == 2 and "data column" in no_column.output
    path.write_text("data\nhttps://x.example\n")
    no_template = runner.invoke(main, ["batch", "submit", "--csv", str(path)])
    assert no_template.exit_code == 2 and "--template" in no_template.output
    path.write_text("data,titel\nhttps://x.example,Jane\n")  # a misspelt title
    misspelt = runner.invoke(main, ["batch", "submit", "--template", "1", "--csv", str(path)])
    assert misspelt.exit_code == 2 and "unknown column 'titel'" in misspelt.output
    path.write_text("data,title\nhttps://x.example,Jane,Doe\n")  # an unquoted comma
    extra = runner.invoke(main, ["batch", "submit", "--template", "1", "--csv", str(path)])
    assert extra.exit_code == 2 and "line 2: more fields" in extra.output, extra.output
    path.write_text("data,template_id\nhttps://x.example,\u0661\n")  # an Arabic-Indic 1
    not_ascii = runner.invoke(main, ["batch", "submit", "--csv", str(path)])
    assert not_ascii.exit_code == 2 and "not a number" in not_ascii.output
    too_many = runner.invoke(main, ["batch", "submit", "--template", "1", "--count",
                                    str(settings.max_batch_items + 1)])
    assert too_many.exit_code == 1 and "at most" in too_many.output
    missing = runner.invoke(main, ["batch", "submit", "--template", "99", "--count", "1"])
    assert missing.exit_code == 1 and "template 99 does not exist" in missing.output
    twice = runner.invoke(main, ["batch", "submit", "--template", "1", "--count", "2",
                                 "-o", "title=A", "-o", "title=B"])
    assert twice.exit_code == 2 and "'title' is given more than once" in twice.output
    copies = runner.invoke(main, ["batch", "submit", "--template", "1", "--count", "2",
                                  "-o", "copies=5"])
    assert copies.exit_code == 2 and "--count N, not -o copies=N" in copies.output
    unknown = runner.invoke(main, ["batch", "items", "0c1d2e3f-0000-4000-8000-000000000000"])
    assert unknown.exit_code == 1 and "no job" in unknown.output
    assert huey.storage.queue_size() == 0


def test_csv_that_is_not_utf8_or_not_printable_is_refused_without_a_traceback(runner, templates,
                                                                              tmp_path):
    path = tmp_path / "bad.csv"
    # A lone surrogate written as UTF-8 would be (ED A0 80): not valid UTF-8.
    path.write_bytes(b"template_id,data,title\n1,https://a.example/1,ok\n"
                     b"1,https://a.example/\xed\xa0\x80,x\n")
    result = runner.invoke(main, ["batch", "submit", "--csv", str(path)])
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "line 3" in result.output and "UTF-8" in result.output
    path.write_text("template_id,data,title\n1,https://a.example/1,Zoë Łódź\n",
                    encoding="utf-8")
    result = runner.invoke(main, ["batch", "submit", "--csv", str(path)])
    assert result.exit_code == 1 and "items[0].title" in result.output, result.output
    result = runner.invoke(main, ["batch", "submit", "--template", "1", "--count", "2",
                                  "-o", "title=\udced"])  # an undecodable argument byte
    assert result.exit_code == 1 and "options.title" in result.output, result.output
    assert huey.storage.queue_size() == 0
