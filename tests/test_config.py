import dataclasses
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from qrq.config import SETTINGS, Settings, SettingsError, load_settings, read_or_create_secret

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_derive_every_path_from_the_data_dir(tmp_path):
    settings = load_settings({"QRQ_DATA_DIR": str(tmp_path)})
    assert settings.queue_db == tmp_path / "queue.db"
    assert settings.app_db == tmp_path / "app.db"
    assert settings.artifacts_dir == tmp_path / "artifacts"
    assert settings.logs_dir == tmp_path / "logs"
    assert settings.workers == 4 and settings.pdf_timeout == 300


def test_environment_values_are_parsed(tmp_path):
    key = "k" + secrets.token_urlsafe(32)
    settings = load_settings({"QRQ_DATA_DIR": str(tmp_path), "QRQ_WORKERS": "7",
                              "QRQ_POLL_INTERVAL": "0.2", "QRQ_SECRET_KEY": key,
                              "QRQ_BACKUP_CODEC": "GZIP", "QRQ_LOG_LEVEL": "debug",
                              "QRQ_SECURE_COOKIES": "yes"})
    assert settings.workers == 7
    assert settings.poll_interval == 0.2
    assert settings.secret_key == key
    assert settings.backup_codec == "gzip" and settings.log_level == "DEBUG"
    assert settings.secure_cookies is True


def test_bad_value_names_the_variable(tmp_path):
    with pytest.raises(ValueError, match="QRQ_WORKERS"):
        load_settings({"QRQ_DATA_DIR": str(tmp_path), "QRQ_WORKERS": "many"})


def test_secret_is_created_once_and_shared(tmp_path):
    first = load_settings({"QRQ_DATA_DIR": str(tmp_path)})
    second = load_settings({"QRQ_DATA_DIR": str(tmp_path)})
    assert first.secret_key == second.secret_key == read_or_create_secret(first)
    assert len(first.secret_key) >= 32
    assert (tmp_path / "secret.key").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(("variable", "value", "allowed"), [
    ("QRQ_BACKUP_CODEC", "xz", "zstd, gzip"),
    ("QRQ_WORKER_TYPE", "proc", "process, thread"),
    ("QRQ_WORKERS", "0", "from 1 to 64"),
    ("QRQ_ANALYTICS_PROCESSES", "-3", "from 1 to 64"),
    ("QRQ_SMTP_SECURITY", "tls", "starttls, ssl, none"),
    ("QRQ_SMTP_PORT", "70000", "from 1 to 65535"),
    ("QRQ_POLL_INTERVAL", "nan", "a number"),
    ("QRQ_ENQUEUE_SYNC", "off", "full, normal"),
    ("QRQ_LOG_LEVEL", "loud", "DEBUG, INFO"),
    ("QRQ_MAINTENANCE_VACUUM", "maybe", "true or false"),
    ("QRQ_BASE_URL", "example.com", "http://"),
    # Past these a value overflowed: busy_timeout is a C int of milliseconds
    # (OverflowError at start-up), an integer a SQLite INTEGER.
    ("QRQ_BUSY_TIMEOUT", "1e308", "from 0 to 3600"),
    ("QRQ_MAX_COPIES", "9" * 30, "at least 1, at most 2147483647"),
    ("QRQ_LEASE_SECONDS", "1e300", "at least 0.1, at most 1000000000"),
    # Path("") is the directory the process started in.
    ("QRQ_DATA_DIR", "", "unset the variable for the default (data)"),
    ("QRQ_DATA_DIR", "  ", "unset the variable for the default (data)"),
])
def test_a_value_outside_what_the_setting_allows_is_refused(tmp_path, variable, value,
                                                            allowed):
    with pytest.raises(SettingsError) as caught:
        load_settings({"QRQ_DATA_DIR": str(tmp_path), variable: value})
    assert str(caught.value).startswith(f"{variable}=")
    assert allowed in str(caught.value)


def test_values_set_in_code_are_checked_too(settings):
    with pytest.raises(SettingsError, match="QRQ_WORKERS"):
        dataclasses.replace(settings, workers=0)
    with pytest.raises(SettingsError, match="QRQ_SMTP_SECURITY"):
        load_settings(smtp_security="tls")


@pytest.mark.parametrize("key", ["secret", "changeme", "dev", "Changeme ", "x" * 31,
                                 "a" * 40, "é" * 15,
                                 "192b9bdd22ab9ed4d12e236c78afcb9a393ec15f71bbf5dc987d54727823bcbf"])
def test_a_short_or_well_known_secret_key_is_refused_without_being_shown(tmp_path, key):
    with pytest.raises(SettingsError, match="QRQ_SECRET_KEY=\\(hidden\\)") as caught:
        load_settings({"QRQ_DATA_DIR": str(tmp_path), "QRQ_SECRET_KEY": key})
    if len(key) > 8:
        assert key.strip() not in str(caught.value)
    assert "32" in str(caught.value)


def test_the_deploy_examples_placeholder_is_refused_as_a_secret(tmp_path):
    example = (ROOT / "deploy" / "qrq.env.example").read_text()
    placeholder = re.search(r"^QRQ_SECRET_KEY=(.*)$", example, re.M)[1]
    with pytest.raises(SettingsError, match="well-known example value"):
        load_settings({"QRQ_DATA_DIR": str(tmp_path), "QRQ_SECRET_KEY": placeholder})


def test_a_weak_secret_file_is_refused(tmp_path):
    (tmp_path / "secret.key").write_text("changeme\n")
    with pytest.raises(SettingsError, match="secret.key"):
        load_settings({"QRQ_DATA_DIR": str(tmp_path)})


def test_each_setting_is_declared_once_with_its_type_and_limits():
    fields = {f.name for f in dataclasses.fields(Settings)}
    assert fields == {s.name for s in SETTINGS}
    assert all(s.help and s.allowed for s in SETTINGS)
    assert Settings().workers == 4  # the declaration carries the default


def readme_settings() -> dict[str, str]:
    """``{variable: default}`` from the README's settings table."""
    rows = re.findall(r"^\| `(QRQ_[A-Z0-9_]+)` \| ([^|]*) \|", (ROOT / "README.md").read_text(),
                      re.MULTILINE)
    return {name: default.strip() for name, default in rows}


def test_every_setting_is_documented_in_the_readme_with_its_default():
    documented = readme_settings()
    missing = [s.env for s in SETTINGS if s.env not in documented]
    assert not missing, f"README.md does not document {missing}"
    wrong = {s.env: (documented[s.env], s.documented_default) for s in SETTINGS
             if documented[s.env] != s.documented_default}
    assert not wrong, f"README.md's defaults differ (README, code): {wrong}"


def test_loading_settings_tightens_what_an_older_installation_left_readable(tmp_path):
    data = tmp_path / "data"
    (data / "artifacts").mkdir(parents=True)
    (data / "queue.db").write_bytes(b"")
    for path, mode in ((data, 0o755), (data / "artifacts", 0o775), (data / "queue.db", 0o644)):
        path.chmod(mode)
    load_settings({"QRQ_DATA_DIR": str(data)})
    assert {p.name: p.stat().st_mode & 0o777 for p in (data, data / "artifacts",
                                                         data / "queue.db")} == {
        "data": 0o700, "artifacts": 0o700, "queue.db": 0o600}
    assert (data / "secret.key").stat().st_mode & 0o777 == 0o600


def test_constraints_pin_every_requirement_within_setup_cfgs_bounds():
    import configparser

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    wanted = [Requirement(line) for line in (
        cfg["options"]["install_requires"] + cfg["options.extras_require"]["test"]
    ).split("\n") if line.strip()]
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = version.strip()
    for requirement in wanted:
        pinned = pins.get(canonicalize_name(requirement.name))
        assert pinned, f"constraints.txt does not pin {requirement.name}"
        assert requirement.specifier.contains(pinned), (requirement, pinned)
    # The private parts qrq uses are bounded by what the tests passed with.
    bounded = {canonicalize_name(r.name): r for r in wanted}
    assert any(s.operator in ("<", "<=") for s in bounded["huey"].specifier)
    assert any(s.operator in ("<", "<=") for s in bounded["qrcode"].specifier)


def test_a_worker_whose_role_excludes_every_type_it_takes_is_refused(tmp_path):
    # An overlap is fine (pdf,mail without mail runs pdf); excluding all of them is not.
    assert load_settings({"QRQ_DATA_DIR": str(tmp_path), "QRQ_WORKER_JOB_TYPES": "pdf,mail",
                          "QRQ_WORKER_EXCLUDE_JOB_TYPES": "mail"}).accept_types == ("pdf",
                                                                                    "mail")
    (tmp_path / "secret.key").write_text(secrets.token_urlsafe(32))  # a data directory
    done = subprocess.run([str(Path(sys.executable).parent / "qrq"), "--data-dir",
                           str(tmp_path), "worker", "--types", "analytics,maintenance",
                           "--exclude-types", "analytics,maintenance,pdf"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip() == (
        "Error: --exclude-types (QRQ_WORKER_EXCLUDE_JOB_TYPES) excludes every type --types "
        "(QRQ_WORKER_JOB_TYPES) takes, analytics, maintenance: this consumer would run no job")


def test_a_worker_refuses_an_unknown_job_type_in_the_caps(tmp_path):
    # Setting QRQ_TYPE_CAPS replaces the defaults: a misspelt type would drop every cap.
    (tmp_path / "secret.key").write_text(secrets.token_urlsafe(32))  # a data directory
    done = subprocess.run([str(Path(sys.executable).parent / "qrq"), "--data-dir",
                           str(tmp_path), "worker", "-w", "1"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={**os.environ, "QRQ_TYPE_CAPS": "batch=1,analytic=1"})
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip() == (
        "Error: unknown job type 'analytic' in QRQ_TYPE_CAPS; known: analytics, batch, "
        "mail, maintenance, pdf, webhook (backups run as maintenance)")


@pytest.mark.parametrize("given_secret", [False, True])
def test_a_data_dir_that_cannot_be_a_directory_is_one_error_naming_it(tmp_path,
                                                                       given_secret):
    # Without a secret qrq writes <data>/secret.key; with one, the directory was first
    # touched further on: both failed with a traceback naming a path under it.
    afile = tmp_path / "afile"
    afile.write_text("not a directory")
    for data, reason in ((afile, "a file, not a directory"),
                         (afile / "sub", "cannot be made a directory: Not a directory")):
        with pytest.raises(SettingsError) as caught:
            load_settings({"QRQ_DATA_DIR": str(data), "QRQ_SECRET_KEY":
                           secrets.token_urlsafe(32) if given_secret else ""})
        assert str(caught.value) == (f"QRQ_DATA_DIR={data}: {reason}; point it at a "
                                     "directory qrq may use")


@pytest.mark.postgres_only("on SQLite the CLI finds no qrq data there first")
def test_cli_on_a_data_dir_that_is_a_file_says_one_line(backend, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("not a directory")
    done = subprocess.run([str(Path(sys.executable).parent / "qrq"), "status"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={**os.environ, "QRQ_DATA_DIR": str(afile)})
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip() == (f"Error: QRQ_DATA_DIR={afile}: a file, not a directory; "
                                   "point it at a directory qrq may use")
