"""A file system error in a ``qrq`` command (a file where a directory belongs, a
directory that cannot be written, a full disk) is one ``Error:`` line naming the path
and the reason, not a traceback."""

import errno
import os

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
