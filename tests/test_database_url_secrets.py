"""A QRQ_DATABASE_URL that libpq cannot read is one line saying what is wrong, and no
part of its password (nor the URL) appears in what any start-up prints: libpq's own
messages quote the token or the whole URL they cannot parse."""

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from qrq import pg_errors
from qrq.queue.postgres_connections import check_reachable, one_line, where
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SECRET = "Zq7SECRETpw"

# (URL, what the one line must say)
MALFORMED = [
    (f"postgresql://qrq:{SECRET}%zz@db.internal/qrq", "a bad percent-encoding"),
    (f"postgresql://qrq:{SECRET}%@db.internal/qrq", "a % in the user name, password"),
    (f"postgresql://qrq:{SECRET}@[::1/qrq", "without its closing ]"),
    (f"postgresql://qrq:{SECRET}@[]/qrq", "an empty IPv6 host address"),
    (f"postgresql://qrq:{SECRET}%00@db/qrq", "a %00"),
    (f"postgresql://qrq:{SECRET}@[::1]x/qrq", "an unexpected character after the host"),
    (f"postgresql://qrq:{SECRET}@db/qrq?no_such_option=1",
     "an unknown query parameter no_such_option"),
    (f"postgresql://qrq:{SECRET}@db/qrq?{SECRET}", "a query parameter without ="),
    ("postgresql://qrq:Zq7/SECRETpw@db/qrq", "an unencoded / or @"),
    ("postgresql://qrq:Zq7@SECRETpw@db/qrq", "an unencoded / or @"),
]


def run(args, url, tmp_path, timeout=120):
    env = {**os.environ, "QRQ_DATA_DIR": str(tmp_path / "data"), "QRQ_DATABASE_URL": url}
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def assert_secret_kept(output: str, url: str) -> None:
    for part in (SECRET, "SECRETpw", "Zq7", url):
        assert part not in output, output


@pytest.mark.parametrize(("url", "said"), MALFORMED)
def test_a_malformed_url_is_one_line_without_the_password(tmp_path, url, said):
    done = run([str(BIN / "qrq"), "jobs", "list"], url, tmp_path)
    assert done.returncode == 1
    output = done.stdout + done.stderr
    assert_secret_kept(output, url)
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") \
        and "QRQ_DATABASE_URL is not a valid PostgreSQL URL" in lines[0] \
        and said in lines[0], output


@pytest.mark.parametrize("start", [
    ["qrq", "status"], ["qrq", "health"], ["qrq", "migrate"], ["qrq", "worker", "-w", "1"],
    ["qrq", "serve", "--port", str(free_port())], ["huey_consumer", "huey_app.huey"],
    ["python", "-c", "import web"]])
def test_no_start_up_prints_the_password_of_a_malformed_url(tmp_path, start):
    program = sys.executable if start[0] == "python" else str(BIN / start[0])
    for url in (f"postgresql://qrq:{SECRET}%zz@db.internal/qrq",
                f"postgresql://qrq:{SECRET}@[::1/qrq"):
        done = run([program, *start[1:]], url, tmp_path)
        assert done.returncode != 0
        output = done.stdout + done.stderr
        assert_secret_kept(output, url)
        assert "not a valid PostgreSQL URL" in output and "Traceback" not in output, output


def test_every_message_about_a_bad_url_leaves_the_password_out():
    """The library functions each error path uses: describe (the web app, CLI errors),
    one_line (the pool's outage lines), where and check_reachable (start-up)."""
    for url, said in MALFORMED:
        with pytest.raises(psycopg.Error) as raised:
            psycopg.connect(url, connect_timeout=2)
        for text in (str(pg_errors.describe(raised.value, url)), one_line(raised.value, url),
                     where(url), pg_errors.where(url)):
            assert SECRET not in text and "Zq7" not in text, text
        with pytest.raises(Exception) as refused:
            check_reachable(url, 2)
        assert said in str(refused.value) and "Zq7" not in str(refused.value)


def test_a_password_quoted_by_a_library_is_redacted():
    url = "postgresql://qrq:p%40ss%2Fword@db/qrq"
    assert pg_errors.redact('bad token "p%40ss%2Fword" or p@ss/word', url) \
        == 'bad token "***" or ***'
    # A password of a few characters is not hunted through the text: "5" replaced
    # everywhere garbled the message and showed where it was.
    said = 'connection to server at "10.0.0.5", port 5432 failed'
    assert pg_errors.redact(said, "postgresql://qrq:5@db/qrq") == said
