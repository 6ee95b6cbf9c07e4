"""A consumer that cannot work as configured refuses to start with one line naming the
setting: a QRQ_TASK_MODULES module that is not there, a backup directory that cannot
hold backups. (A missing artifact store: tests/test_artifacts_system.py.)"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from qrq.backup.files import backups_dir_or_exit
from qrq.config import load_settings
from qrq.errors import QrqError
from qrq.queue import load_task_modules

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@pytest.fixture
def data_dir(tmp_path):
    data = tmp_path / "data"
    env = {**os.environ, "QRQ_DATA_DIR": str(data)}
    subprocess.run([str(BIN / "qrq"), "init"], env=env, check=True, capture_output=True)
    return data


def start(command, data_dir, cwd=ROOT, **settings):
    """Start *command* (it is expected to refuse, so to end by itself)."""
    env = {**os.environ, "QRQ_DATA_DIR": str(data_dir), "PYTHONPATH": str(ROOT), **settings}
    return subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def assert_one_line(done, *expected):
    assert done.returncode == 1, done.stdout + done.stderr
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), done.stdout + done.stderr
    for text in expected:
        assert text in lines[0], lines[0]


def test_a_task_module_that_is_not_there_is_one_line_naming_the_setting(data_dir, tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "myapp").mkdir()
    (project / "myapp" / "__init__.py").write_text("")
    for modules, missing in (("myapp.taks", "'myapp.taks'"), ("myap.tasks", "'myap'")):
        done = start([str(BIN / "qrq"), "worker", "-w", "1"], data_dir, cwd=project,
                     QRQ_TASK_MODULES=modules)
        assert_one_line(done, "QRQ_TASK_MODULES", missing, str(project))
    done = start([str(BIN / "huey_consumer"), "huey_app.huey"], data_dir,
                 QRQ_TASK_MODULES="tasks.pdf, tasks.pfd")
    assert_one_line(done, "QRQ_TASK_MODULES", "'tasks.pfd'")


def test_an_import_error_inside_a_task_module_keeps_its_traceback(tmp_path, monkeypatch):
    """The module is there: what it fails to import is its own bug, which the
    traceback locates; a module that is not there is the setting's mistake."""
    (tmp_path / "own_tasks.py").write_text("import not_installed_dependency\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError) as raised:
        load_task_modules(load_settings({"QRQ_DATA_DIR": str(tmp_path / "data"),
                                         "QRQ_TASK_MODULES": "own_tasks"}))
    assert raised.value.name == "not_installed_dependency"
    assert any(str(entry.path).endswith("own_tasks.py") for entry in raised.traceback)
    with pytest.raises(QrqError, match="QRQ_TASK_MODULES='no_such_tasks'"):
        load_task_modules(load_settings({"QRQ_DATA_DIR": str(tmp_path / "data"),
                                         "QRQ_TASK_MODULES": "no_such_tasks"}))


def test_a_file_where_the_backup_directory_belongs_stops_the_consumer(data_dir):
    (data_dir / "backups").write_text("")
    done = start([str(BIN / "qrq"), "worker", "-w", "1"], data_dir)
    assert_one_line(done, f"{data_dir / 'backups'}: a file is there, where a directory "
                          "belongs", "QRQ_BACKUP_DIR")
    (data_dir / "sets").write_text("")
    done = start([str(BIN / "huey_consumer"), "huey_app.huey"], data_dir,
                 QRQ_BACKUP_DIR="sets")
    assert_one_line(done, f"the backup directory (QRQ_BACKUP_DIR) {data_dir / 'sets'}: "
                          "a file is there")
    # Below a file: reading the settings tightened its mode first, and raised there.
    done = start([str(BIN / "huey_consumer"), "huey_app.huey"], data_dir,
                 QRQ_BACKUP_DIR="sets/daily")
    assert_one_line(done, f"the backup directory (QRQ_BACKUP_DIR) "
                          f"{data_dir / 'sets' / 'daily'}: {data_dir / 'sets'} is a file, "
                          "where a directory belongs")


def test_the_backup_directory_is_checked_only_on_a_host_that_backs_up(data_dir):
    # A host without maintenance jobs keeps no backups: its QRQ_BACKUP_DIR may be a mount
    # only the maintenance host has.
    (data_dir / "backups").write_text("")
    for role in ({"QRQ_WORKER_EXCLUDE_JOB_TYPES": "maintenance"},
                 {"QRQ_WORKER_JOB_TYPES": "pdf,mail"}):
        backups_dir_or_exit(load_settings({"QRQ_DATA_DIR": str(data_dir), **role}))
    with pytest.raises(SystemExit, match="a file is there"):
        backups_dir_or_exit(load_settings({"QRQ_DATA_DIR": str(data_dir),
                                           "QRQ_WORKER_JOB_TYPES": "pdf,maintenance"}))


def test_a_backup_directory_the_checks_cannot_look_at_is_one_line(data_dir):
    # Path.exists() raises for what it cannot look at (a parent it may not search, a
    # name too long), which came out as a traceback.
    settings = load_settings({"QRQ_DATA_DIR": str(data_dir),
                              "QRQ_BACKUP_DIR": "x" * 300 + "/sets"})
    with pytest.raises(SystemExit, match="QRQ_BACKUP_DIR.*File name too long"):
        backups_dir_or_exit(settings)


def test_a_backup_run_into_a_file_fails_at_once_in_one_line(settings):
    """Not retried (a QrqError: the input is wrong) for a minute and a half to end in
    NotADirectoryError."""
    from qrq.backup import run_backup

    settings.backups_dir.write_text("")
    with pytest.raises(QrqError) as raised:
        run_backup(settings)
    assert str(raised.value) == (f"the backup directory (QRQ_BACKUP_DIR) "
                                 f"{settings.backups_dir}: a file is there, where a "
                                 "directory belongs")
