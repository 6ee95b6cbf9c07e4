"""qrq's settings: one table, read from ``QRQ_*`` environment variables.

Every path derives from the data directory, so one variable (``QRQ_DATA_DIR``)
moves the queue, the app database, the artifacts and the logs together. The web
app, the consumer and the CLI all call :func:`load_settings`.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any


@dataclasses.dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    help: str
    parse: Callable[[str], Any] = str

    @property
    def env(self) -> str:
        return "QRQ_" + self.name.upper()


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {text!r}")


def _choice(text: str, choices: tuple[str, ...]) -> str:
    if text not in choices:
        raise ValueError(f"expected one of {', '.join(choices)}")
    return text


def _caps(text: str) -> str:
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, count = item.partition("=")
        if not sep or not name.strip() or not count.strip().isdigit():
            raise ValueError(f"expected TYPE=N,... but got {item!r}")
    return text


def _cron(text: str) -> str:
    """A five-field crontab (minute hour day month weekday), or empty for never."""
    if text.strip():
        from huey import crontab

        fields = text.split()
        if len(fields) != 5:
            raise ValueError(f"expected 5 crontab fields (M H DOM MON DOW), got {text!r}")
        crontab(*fields, strict=True)
    return text.strip()


def _timezone(text: str) -> str:
    if text.strip().upper() != "UTC":
        import zoneinfo

        try:
            zoneinfo.ZoneInfo(text.strip())
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {text!r}") from None
    return text.strip()


SETTINGS = (
    Setting("data_dir", "data", "Directory for every runtime file: queue.db, app.db, "
            "artifacts/, logs/, secret.key."),
    Setting("secret_key", "", "Secret that signs queue payloads and web sessions. "
            "Empty: read <data>/secret.key, created on first use."),
    Setting("workers", 4, "Worker processes started by `qrq worker` and `qrq dev`.", int),
    Setting("worker_type", "process", "Huey worker type for `qrq worker`: process "
            "(enforces time limits) or thread.",),
    Setting("poll_interval", 0.05, "Seconds an idle worker waits between queue polls; "
            "bounds the pickup latency.", float),
    Setting("lease_seconds", 30.0, "A running job's lease; a heartbeat renews it. A job "
            "whose consumer died runs again once its lease lapses.", float),
    Setting("busy_timeout", 10.0, "Seconds a SQLite connection waits for a lock "
            "before giving up.", float),
    Setting("max_request_bytes", 1024 * 1024, "Largest accepted request body, in bytes.",
            int),
    Setting("max_copies", 1000, "Most cards one PDF job may render.", int),
    Setting("max_active_jobs", 1000, "Most jobs one user may have queued, running or "
            "retrying at once; more are refused with 429 (0: no limit; admins are exempt).",
            int),
    Setting("pdf_timeout", 300, "Time limit of a PDF job, in seconds.", int),
    Setting("pdf_retries", 3, "Retries of a PDF job after a transient error.", int),
    Setting("job_expiry", 3600, "Seconds a job may wait to start; one not started in "
            "time ends expired instead of running late.", int),
    Setting("retain_finished_days", 7.0, "Days a finished job's record and files are kept.",
            float),
    Setting("retain_failed_days", 30.0, "Days a failed, canceled or expired job's record is "
            "kept (the dead-letter list).", float),
    Setting("retry_delay", 2.0, "First retry delay in seconds; doubles each attempt, "
            "with jitter.", float),
    Setting("type_caps", "batch=2,analytics=2,maintenance=1", "Most jobs of each listed "
            "type running at once, across all consumers (TYPE=N,...).", _caps),
    Setting("long_job_cap", 3, "Most jobs of the capped types (type_caps) running at once "
            "in total, so some worker is always free for interactive work.", int),
    Setting("task_modules", "", "Extra task modules the consumer imports, comma-separated "
            "(e.g. myapp.tasks); huey_app.py imports qrq's own."),
    Setting("smtp_host", "", "SMTP server for mail. Empty: each message is written to "
            "<data>/outbox/ as an .eml file."),
    Setting("smtp_port", 587, "SMTP port.", int),
    Setting("smtp_security", "starttls", "starttls, ssl or none."),
    Setting("smtp_user", "", "SMTP login (empty: no login)."),
    Setting("smtp_password", "", "SMTP password."),
    Setting("mail_from", "qrq@localhost", "Sender address of qrq's mail."),
    Setting("host", "127.0.0.1", "Address `qrq dev` binds the web app to."),
    Setting("port", 5000, "Port `qrq dev` binds the web app to.", int),
    Setting("log_level", "INFO", "Log level of the consumer and the web app."),
    Setting("enqueue_sync", "full", "SQLite synchronous level of enqueues: full (fsynced "
            "before the job id is returned) or normal (faster; a power cut may lose the "
            "newest enqueues).", lambda text: _choice(text, ("full", "normal"))),
    Setting("backup_dir", "", "Directory of the backup sets (relative: inside the data dir). "
            "Empty: <data>/backups."),
    Setting("backup_schedule", "0 2 * * *", "When the backup runs, as a crontab "
            "(M H DOM MON DOW) in backup_timezone; empty: never on its own.", _cron),
    Setting("backup_timezone", "UTC", "Time zone of backup_schedule, "
            "maintenance_schedule and of the retention's days, weeks and months.",
            _timezone),
    Setting("backup_keep_daily", 7, "Backup sets kept: the newest of each of the last N "
            "days.", int),
    Setting("backup_keep_weekly", 4, "... and of each of the last N weeks.", int),
    Setting("backup_keep_monthly", 12, "... and of each of the last N months.", int),
    Setting("backup_codec", "zstd", "Compression of backups: zstd (fast) or gzip.",),
    Setting("backup_threads", 2, "Databases backed up at once.", int),
    Setting("backup_timeout", 21600, "Time limit of a backup job, in seconds.", int),
    Setting("maintenance_schedule", "0 3 * * 0", "When the weekly maintenance runs "
            "(log rotation, WAL checkpoint, VACUUM when idle), as a crontab.", _cron),
    Setting("log_max_age_days", 30.0, "Days rotated log files in <data>/logs/ are kept.",
            float),
    Setting("maintenance_vacuum", True, "VACUUM the queue and app databases during "
            "maintenance when no job is running or queued.", _bool),
    Setting("alert_backlog", 100, "Queued jobs (all types) above which the backlog alert "
            "fires.", int),
    Setting("alert_queue_age", 600.0, "Seconds the oldest queued job may wait before the "
            "queue-age alert fires.", float),
    Setting("alert_heartbeat_age", 90.0, "Seconds without a consumer heartbeat before the "
            "no-consumer alert fires; also the limit of `qrq health --consumer`.", float),
    Setting("alert_mail_interval", 3600.0, "Least seconds between two alert mails of one "
            "kind.", float),
    Setting("alert_mail_to", "", "Extra alert mail recipients, comma-separated; admins with "
            "an e-mail address always get them."),
    Setting("metrics_token", "", "Bearer token that GET /metrics accepts (for Prometheus). "
            "Empty: only an admin's API token."),
    Setting("secure_cookies", False, "Send the dashboard's session cookie over HTTPS only "
            "(turn on behind TLS).", _bool),
    Setting("max_batch_items", 10_000, "Most items one bulk-generation batch may hold "
            "(more: 413).", int),
    Setting("max_batch_bytes", 16 * 1024 * 1024, "Largest accepted body of a batch "
            "request, in bytes.", int),
    Setting("batch_timeout", 1800, "Time limit of one run of a batch job, in seconds.", int),
    Setting("base_url", "", "Public URL of the web app, for links in mail. Empty: "
            "http://<host>:<port>."),
    Setting("analytics_dbs", "analytics", "Where the scan databases are: a directory (its "
            "*.db files) or a glob pattern; relative paths are inside the data dir."),
    Setting("analytics_cache_ttl", 3600.0, "Seconds a computed analytics report is served "
            "from the cache.", float),
    Setting("analytics_timeout", 600, "Time limit of an analytics job, in seconds.", int),
    Setting("analytics_processes", 2, "Processes an analytics job reads the scan "
            "databases with (1: in the job's own process).", int),
    Setting("analytics_warmup", 10, "Most-requested analytics reports the warm-up task "
            "recomputes before they expire (0: none).", int),
)

SETTINGS_BY_NAME = {s.name: s for s in SETTINGS}


@dataclasses.dataclass(frozen=True)
class Settings:
    data_dir: Path
    secret_key: str
    workers: int
    worker_type: str
    poll_interval: float
    lease_seconds: float
    busy_timeout: float
    max_request_bytes: int
    max_copies: int
    max_active_jobs: int
    pdf_timeout: int
    pdf_retries: int
    job_expiry: int
    retain_finished_days: float
    retain_failed_days: float
    retry_delay: float
    type_caps: str
    long_job_cap: int
    task_modules: str
    smtp_host: str
    smtp_port: int
    smtp_security: str
    smtp_user: str
    smtp_password: str
    mail_from: str
    host: str
    port: int
    log_level: str
    enqueue_sync: str
    backup_dir: str
    backup_schedule: str
    backup_timezone: str
    backup_keep_daily: int
    backup_keep_weekly: int
    backup_keep_monthly: int
    backup_codec: str
    backup_threads: int
    backup_timeout: int
    maintenance_schedule: str
    log_max_age_days: float
    maintenance_vacuum: bool
    alert_backlog: int
    alert_queue_age: float
    alert_heartbeat_age: float
    alert_mail_interval: float
    alert_mail_to: str
    metrics_token: str
    secure_cookies: bool
    max_batch_items: int
    max_batch_bytes: int
    batch_timeout: int
    base_url: str
    analytics_dbs: str
    analytics_cache_ttl: float
    analytics_timeout: int
    analytics_processes: int
    analytics_warmup: int

    @property
    def queue_db(self) -> Path:
        return self.data_dir / "queue.db"

    @property
    def app_db(self) -> Path:
        return self.data_dir / "app.db"

    @property
    def artifacts_dir(self) -> Path:
        return self.data_dir / "artifacts"

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def outbox_dir(self) -> Path:
        return self.data_dir / "outbox"

    @property
    def backups_dir(self) -> Path:
        # A relative backup_dir is inside the data dir (an absolute one wins the join).
        return self.data_dir / (self.backup_dir or "backups")

    @property
    def caps(self) -> dict[str, int]:
        """``type_caps`` as a dict, e.g. ``{"batch": 2}``."""
        caps = {}
        for item in filter(None, (part.strip() for part in self.type_caps.split(","))):
            name, _, count = item.partition("=")
            caps[name.strip()] = int(count)
        return caps

    @property
    def secret_file(self) -> Path:
        return self.data_dir / "secret.key"

    def ensure_dirs(self) -> None:
        for path in (self.data_dir, self.artifacts_dir, self.logs_dir):
            path.mkdir(parents=True, exist_ok=True)


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Read every setting from ``QRQ_*`` variables; keyword overrides win.

    :raises ValueError: a variable holds a value its setting cannot parse.
    """
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        if setting.name in overrides:
            values[setting.name] = overrides.pop(setting.name)
        elif setting.env in environ:
            raw = environ[setting.env]
            try:
                values[setting.name] = setting.parse(raw)
            except ValueError as exc:
                raise ValueError(f"{setting.env}={raw!r}: {exc}") from None
        else:
            values[setting.name] = setting.default
    if overrides:
        raise TypeError(f"unknown settings: {', '.join(sorted(overrides))}")
    values["data_dir"] = Path(values["data_dir"]).resolve()
    settings = Settings(**values)
    if not settings.secret_key:
        settings = dataclasses.replace(settings, secret_key=read_or_create_secret(settings))
    return settings


def read_or_create_secret(settings: Settings) -> str:
    """The secret in ``<data>/secret.key``, created (mode 0600) when absent.

    The secret is written to a temporary file and linked into place, so a web
    app and a consumer starting together agree on one complete secret.
    """
    path = settings.secret_file
    if not path.exists():
        settings.data_dir.mkdir(parents=True, exist_ok=True)
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
    return path.read_text().strip()
