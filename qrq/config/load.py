"""Reading the settings: every row parsed from its ``QRQ_*`` variable and checked,
and the generated ``<data>/secret.key`` used when ``QRQ_SECRET_KEY`` is empty.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from qrq.config.files import PRIVATE_UMASK, make_private
from qrq.config.row import SettingsError
from qrq.config.settings import SETTINGS, Settings, check_secret

logger = logging.getLogger("qrq.config")
# Variables of qrq's own tests and benchmarks, not settings.
_NOT_SETTINGS = ("QRQ_TEST_", "QRQ_BENCH_")
_warned: set[str] = set()  # each unknown name once per process


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Read every setting from ``QRQ_*`` variables (keyword overrides win) and check it.

    Every qrq process (web app, consumer, CLI) starts here, so this is also where
    its files are made private: the umask is set to 0077, the data directory is made
    and its existing modes are tightened; and where the secret is read from the data
    directory (created there when absent), unless ``QRQ_SECRET_KEY`` gives it.

    :raises SettingsError: a value its setting does not allow (a ``ValueError``), or a
        data directory that cannot be made.
    """
    os.umask(PRIVATE_UMASK)
    settings = read_settings(environ, **overrides)
    warn_unknown(os.environ if environ is None else environ)
    make_data_dir(settings)
    if not settings.secret_key:
        settings = dataclasses.replace(settings, secret_key=read_or_create_secret(settings))
    if not settings.database_url:
        refuse_moved_files(settings)
    make_private(settings)
    return settings


def warn_unknown(environ: Mapping[str, str]) -> None:
    """Log a ``QRQ_*`` variable that is no setting, with the setting it may mean: a
    mistyped name (``QRQ_WORKER_JOB_TYPE``) would otherwise leave its default in force."""
    known = [one.env for one in SETTINGS]
    for name in sorted(environ):
        if name.startswith("QRQ_") and name not in known and name not in _warned \
                and not name.startswith(_NOT_SETTINGS):
            _warned.add(name)
            close = difflib.get_close_matches(name, known, n=1)
            logger.warning("%s is not a qrq setting and is ignored%s", name,
                           f" (did you mean {close[0]}?)" if close else "")


def read_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """:func:`load_settings` without touching a file: the settings the variables give
    (no secret unless ``QRQ_SECRET_KEY`` has one).

    :raises SettingsError: a value its setting does not allow.
    """
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for one in SETTINGS:
        if one.name in overrides:
            values[one.name] = overrides.pop(one.name)
        elif one.env in environ:
            raw = environ[one.env]
            try:
                values[one.name] = one.parse(raw)
            except ValueError as exc:
                raise SettingsError(f"{one.env}={one.shown(raw)}: {exc}") from None
        else:
            values[one.name] = one.default
    if overrides:
        raise TypeError(f"unknown settings: {', '.join(sorted(overrides))}")
    values["data_dir"] = Path(values["data_dir"]).resolve()
    return Settings(**values)


def settings_or_exit() -> Settings:
    """:func:`load_settings` for a process that is starting (web app, consumer): a value
    its setting does not allow ends the process with one line instead of a traceback."""
    try:
        return load_settings()
    except SettingsError as exc:
        raise SystemExit(f"Error: {exc}") from None


def make_data_dir(settings: Settings) -> None:
    """Make the data directory (0700) unless it exists.

    :raises SettingsError: it cannot be a directory (a file is there, or a path like
        /proc/qrq), naming QRQ_DATA_DIR: every later step would fail with a traceback.
    """
    try:
        settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        reason = ("a file, not a directory" if isinstance(exc, FileExistsError)
                  else f"cannot be made a directory: {exc.strerror}")
        raise SettingsError(f"QRQ_DATA_DIR={settings.data_dir}: {reason}; point it at a "
                            "directory qrq may use") from None


def refuse_moved_files(settings: Settings) -> None:
    """Refuse the SQLite files of an installation moved to PostgreSQL: a process
    started without ``QRQ_DATABASE_URL`` (a host's settings left behind) would run
    their queued jobs a second time, and show none of what happened since.

    :raises SettingsError: ``qrq migrate-to-postgres`` left its note beside them.
    """
    try:
        moved = settings.moved_marker.read_text().strip().splitlines()[0]
    except (OSError, IndexError, UnicodeDecodeError):
        return
    raise SettingsError(f"{settings.data_dir} was {moved}: set QRQ_DATABASE_URL. To go "
                        f"back to these files anyway, delete {settings.moved_marker} (the "
                        "jobs queued at the move run again; nothing done since is in them)")


def read_or_create_secret(settings: Settings) -> str:
    """The secret in ``<data>/secret.key`` (the data directory exists), created (mode
    0600) when absent.

    The secret is written to a temporary file and linked into place, so a web
    app and a consumer starting together agree on one complete secret.

    :raises SettingsError: the file holds a weak secret (someone wrote it by hand).
    """
    path = settings.secret_file
    if not path.exists():
        tmp = path.with_name(f".secret.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(32) + "\n")
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # Another process won the race; use its secret.
        finally:
            tmp.unlink()
    secret = path.read_text().strip()
    try:
        check_secret(secret)
    except ValueError as exc:
        raise SettingsError(f"{path}: {exc}") from None
    return secret
