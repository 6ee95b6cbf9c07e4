from pathlib import Path

import pytest

from qrq.config import SETTINGS, load_settings, read_or_create_secret

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_derive_every_path_from_the_data_dir(tmp_path):
    settings = load_settings({"QRQ_DATA_DIR": str(tmp_path)})
    assert settings.queue_db == tmp_path / "queue.db"
    assert settings.app_db == tmp_path / "app.db"
    assert settings.artifacts_dir == tmp_path / "artifacts"
    assert settings.logs_dir == tmp_path / "logs"
    assert settings.workers == 4 and settings.pdf_timeout == 300


def test_environment_values_are_parsed(tmp_path):
    settings = load_settings({"QRQ_DATA_DIR": str(tmp_path), "QRQ_WORKERS": "7",
                              "QRQ_POLL_INTERVAL": "0.2", "QRQ_SECRET_KEY": "s"})
    assert settings.workers == 7
    assert settings.poll_interval == 0.2
    assert settings.secret_key == "s"


def test_bad_value_names_the_variable(tmp_path):
    with pytest.raises(ValueError, match="QRQ_WORKERS"):
        load_settings({"QRQ_DATA_DIR": str(tmp_path), "QRQ_WORKERS": "many"})


def test_secret_is_created_once_and_shared(tmp_path):
    first = load_settings({"QRQ_DATA_DIR": str(tmp_path)})
    second = load_settings({"QRQ_DATA_DIR": str(tmp_path)})
    assert first.secret_key == second.secret_key == read_or_create_secret(first)
    assert len(first.secret_key) >= 32
    assert (tmp_path / "secret.key").stat().st_mode & 0o777 == 0o600


def test_every_setting_is_documented_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    missing = [s.env for s in SETTINGS if s.env not in readme]
    assert not missing, f"README.md does not document {missing}"
