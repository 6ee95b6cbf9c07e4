"""A file system error in a ``qrq`` command (a file where a directory belongs, a
directory that cannot be written, a full disk) is one ``Error:`` line naming the path
and the reason, not a traceback."""

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from qrq.cli import main


def test_a_file_where_a_data_directory_belongs_is_one_line(runner, templates, settings):
    artifacts = settings.artifacts_dir
    os.rename(artifacts, artifacts.with_name("artifacts.real"))
    artifacts.write_text("")
    done = runner.invoke(main, ["pdf", "1"])
    assert done.exit_code == 1, done.output
    assert done.output.splitlines() == [
        f"Error: {artifacts}: a file is there, where a directory belongs"], done.output


def test_os_errors_are_described_by_path_and_reason(tmp_path):
    from qrq.cli.base import describe_os_error

    (tmp_path / "file").write_text("")
    with pytest.raises(OSError) as below_a_file:
        (tmp_path / "file" / "sub").mkdir(parents=True)
    assert describe_os_error(below_a_file.value) == (
        f"{tmp_path / 'file' / 'sub'}: {tmp_path / 'file'} is a file, where a directory "
        "belongs")
    with pytest.raises(OSError) as missing:
        open(tmp_path / "missing")  # noqa: SIM115
    assert describe_os_error(missing.value) == (
        f"{tmp_path / 'missing'}: No such file or directory")
    assert describe_os_error(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))) == (
        "No space left on device (OSError)")


def test_health_on_a_nearly_full_disk_says_how_full_in_its_one_line(small_disk):
    """Not "(details above)" with nothing above: the queue database counts as full
    below 1 MiB free, which no error logged."""
    data = small_disk / "data"
    env = {**os.environ, "QRQ_DATA_DIR": str(data)}
    env.pop("QRQ_DATABASE_URL", None)
    qrq = str(Path(sys.executable).parent / "qrq")
    subprocess.run([qrq, "init"], env=env, check=True, capture_output=True)
    with open(small_disk / "filler", "wb") as filler:
        filler.write(b"\0" * (shutil.disk_usage(small_disk).free - (512 << 10)))
    done = subprocess.run([qrq, "health"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 1
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "Error: queue database has no space left (") and f"free in {data}, under the " \
        "1.0 MiB" in lines[0], lines


def test_health_puts_the_reason_in_its_one_line(runner, settings):
    from qrq.appdb.db import app_db

    with app_db.connection_context():
        app_db.execute_sql('drop table "user" cascade' if settings.database_url
                           else 'drop table "user"')
    done = runner.invoke(main, ["health"])
    assert done.exit_code == 1
    lines = done.output.splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "Error: app database has no qrq tables (run qrq init") and any(
        reason in lines[0] for reason in ("(OperationalError: no such table: user)",
                                         '(ProgrammingError: relation "user" does not '
                                         'exist')), done.output
