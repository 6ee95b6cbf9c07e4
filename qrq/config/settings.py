"""The settings, declared once: each a field of :class:`Settings` with its default,
type, limits and help, and the checks of the values that need more than limits.

Every path derives from the data directory, so one variable (``QRQ_DATA_DIR``)
moves the queue, the app database, the artifacts and the logs together.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import re
from pathlib import Path

from qrq.config.files import make_private
from qrq.config.row import Setting, setting
from qrq.schedule import cron, zone

MIN_SECRET_BYTES = 32
# Values copied from docs and tutorials (Flask's among them); anyone can guess them.
WELL_KNOWN_SECRETS = frozenset({
    "secret", "secret-key", "secret_key", "secretkey", "mysecret", "supersecret",
    "super-secret", "super-secret-key", "changeme", "change-me", "changethis", "dev",
    "development", "test", "testing", "password", "default", "key", "qrq", "flask",
    "your-secret-key", "your_secret_key", "yoursecretkey", "you-will-never-guess",
    "your-secret-key-here", "replace-me", "please-change-me",
    # deploy/qrq.env.example's placeholder, now and before
    "replace-with-the-output-of-python3--c-import-secrets-print-secrets.token_urlsafe-32",
    "replace-with-the-output-of-python3--c-import-secrets-print-secrets.token_urlsafe-48",
    '_5#y2L"F4Q8z\n\xec]/', '_5#y2l"f4q8z\n\xec]/',
    "192b9bdd22ab9ed4d12e236c78afcb9a393ec15f71bbf5dc987d54727823bcbf",
})


def _check_caps(text: str) -> None:
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, count = item.partition("=")
        if not sep or not name.strip() or not count.strip().isdigit():
            raise ValueError(f"expected TYPE=N,... but got {item!r}")


def _check_type_list(text: str) -> None:
    for name in filter(None, (part.strip() for part in text.split(","))):
        if not name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"expected job type names separated by commas but got {name!r}")


def _type_list(text: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(filter(None, (part.strip() for part in text.split(",")))))


def _check_cron(text: str) -> None:
    """A five-field crontab (minute hour day month weekday), or empty for never."""
    cron(text)


def _check_zone(text: str) -> None:
    zone(text)


def _check_url(text: str) -> None:
    if text and not text.startswith(("http://", "https://")):
        raise ValueError("expected empty or a URL starting with http:// or https://")


# S3's bucket naming rules (lower case, digits, dots, hyphens; 3-63 characters).
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def s3_location(text: str) -> tuple[str, str] | None:
    """``(bucket, prefix)`` of an ``s3://bucket/prefix`` artifact store; None for a
    directory."""
    if not text.lower().startswith("s3://"):
        return None
    bucket, _, prefix = text[5:].partition("/")
    return bucket, prefix.strip("/")


def _check_artifact_store(text: str) -> None:
    """Empty, a directory, or ``s3://bucket[/prefix]`` with boto3 installed."""
    location = s3_location(text)
    if location is None:
        if re.match(r"[a-z][a-z0-9+.-]*://", text, re.IGNORECASE):
            raise ValueError("expected a directory or s3://bucket/prefix")
        return
    bucket, prefix = location
    if not _BUCKET.fullmatch(bucket):
        raise ValueError(f"{bucket!r} is not an S3 bucket name (3-63 lower-case letters, "
                         "digits, dots and hyphens); expected s3://bucket/prefix")
    if prefix and any(part in ("", ".", "..") for part in prefix.split("/")):
        raise ValueError("the prefix after the bucket may not hold empty, . or .. parts")
    if importlib.util.find_spec("boto3") is None:
        raise ValueError("an S3 store needs boto3: pip install 'qrq[s3]' (in a checkout: "
                         "pip install -e '.[s3]')")


def _check_database_url(text: str) -> None:
    if text and not text.startswith(("postgresql://", "postgres://")):
        raise ValueError("expected empty (SQLite files in the data dir) or a URL starting "
                         "with postgresql://")


def check_secret(text: str) -> None:
    """Refuse a secret that is short or guessable (empty means: use ``secret.key``)."""
    if not text:
        return
    hint = ("use at least 32 random bytes, e.g. the output of `python3 -c \"import "
            "secrets; print(secrets.token_urlsafe(32))\"`, or leave it empty to use "
            "<data>/secret.key")
    if text.strip().lower() in WELL_KNOWN_SECRETS:
        raise ValueError(f"a well-known example value, not a secret; {hint}")
    if len(text.encode()) < MIN_SECRET_BYTES:
        raise ValueError(f"too short ({len(text.encode())} bytes); {hint}")
    if len(set(text)) < 8:
        raise ValueError(f"too repetitive ({len(set(text))} distinct characters); {hint}")


@dataclasses.dataclass(frozen=True)
class Settings:
    """Every setting, declared once: name (``QRQ_`` + upper case), default, type, limits, help."""

    data_dir: Path = setting(Path("data"), "Directory for every runtime file: `queue.db` "
                             "(queue, schedule, job records), `app.db` (users, templates), "
                             "`artifacts/`, `logs/`, `secret.key`.")
    database_url: str = setting("", "Where qrq keeps its queue, job records, users and "
                                "templates. Empty: SQLite files in the data dir (`queue.db`, "
                                "`app.db`). `postgresql://user:password@host:port/dbname` "
                                "(libpq parameters such as `?sslmode=require` allowed): "
                                "that PostgreSQL database.", check=_check_database_url,
                                secret=True)
    secret_key: str = setting("", "Secret that signs queue payloads and web sessions: at "
                              "least 32 bytes, not a well-known example value. Empty: read "
                              "`<data>/secret.key`, created on first use.",
                              check=check_secret, secret=True)
    workers: int = setting(4, "Worker processes started by `qrq worker` and `qrq dev`.",
                           low=1, high=64)
    worker_type: str = setting("process", "Huey worker type for `qrq worker`: process "
                               "(enforces time limits) or thread.",
                               choices=("process", "thread"))
    worker_job_types: str = setting("", "Job types this host's consumer runs, "
                                    "comma-separated (`qrq worker --types`); empty: every "
                                    "type.", check=_check_type_list)
    worker_exclude_job_types: str = setting("", "Job types this host's consumer never runs, "
                                            "comma-separated (`qrq worker --exclude-types`).",
                                            check=_check_type_list)
    worker_nice: int = setting(10, "How much lower the CPU priority (nice) of the consumer's "
                               "worker processes is, so the web app stays fast while jobs "
                               "run (0: the same as the consumer).", low=0, high=19)
    worker_io_priority: str = setting("low", "I/O priority of the worker processes: low "
                                      "(best effort, lowest level), idle (only when the "
                                      "disk is otherwise idle) or normal.",
                                      choices=("low", "idle", "normal"))
    poll_interval: float = setting(0.05, "Seconds between a consumer's queue polls while "
                                   "it is idle (one worker polls for all); bounds the pickup "
                                   "latency.", low=0.001, high=60)
    lease_seconds: float = setting(30.0, "A running job's lease; a heartbeat renews it. A "
                                   "job whose consumer died runs again once its lease "
                                   "lapses.", low=0.1)
    busy_timeout: float = setting(10.0, "Seconds a SQLite connection waits for a lock "
                                  "(on PostgreSQL: for a connection from the pool) "
                                  "before giving up.", low=0, high=3600)
    max_request_bytes: int = setting(1024 * 1024, "Largest accepted request body, in "
                                     "bytes.", low=1)
    max_copies: int = setting(1000, "Most cards one PDF job may render.", low=1)
    max_active_jobs: int = setting(1000, "Most jobs one user may have queued, running or "
                                   "retrying at once; more are refused with 429 (0: no "
                                   "limit; admins are exempt).", low=0)
    max_active_analytics: int = setting(4, "Most analytics reports one user may have "
                                        "computing at once (reports already computing are "
                                        "shared and free); more are refused with 429 (0: no "
                                        "limit; admins are exempt).", low=0)
    pdf_timeout: int = setting(300, "Time limit of a PDF job, in seconds.", low=1)
    pdf_retries: int = setting(3, "Retries of a PDF job after a transient error.", low=0)
    print_margin_mm: float = setting(5.0, "Blank margin in mm between the page edge and "
                                     "anything printed on a card sheet (PDF jobs and "
                                     "batches): most printers cannot print the outer "
                                     "3-5 mm.", low=0, high=50)
    job_expiry: int = setting(3600, "Seconds a job may wait to start; one not started in "
                              "time ends expired instead of running late.", low=1)
    retain_finished_days: float = setting(7.0, "Days a finished job's record and files "
                                          "are kept.", low=0)
    retain_failed_days: float = setting(30.0, "Days a failed, canceled or expired job's "
                                        "record is kept (the dead-letter list).", low=0)
    retry_delay: float = setting(2.0, "First retry delay in seconds; doubles each "
                                 "attempt, with jitter.", low=0)
    type_caps: str = setting("batch=2,analytics=2,maintenance=1,webhook=2", "Most jobs of each "
                             "listed type running at once, across all consumers "
                             "(TYPE=N,...).", check=_check_caps)
    long_job_cap: int = setting(3, "Most jobs of the capped types (type_caps) running at "
                                "once in total, so some worker is always free for "
                                "interactive work.", low=0)
    task_modules: str = setting("", "Extra task modules the consumer imports, "
                                "comma-separated (e.g. myapp.tasks); huey_app.py imports "
                                "qrq's own.")
    smtp_host: str = setting("", "SMTP server for mail. Empty: each message is written to "
                             "`<data>/outbox/` as an .eml file.")
    smtp_port: int = setting(587, "SMTP port.", low=1, high=65535)
    smtp_security: str = setting("starttls", "How the SMTP connection is protected: "
                                 "starttls, ssl or none (none sends the password in "
                                 "plain text).", choices=("starttls", "ssl", "none"))
    smtp_user: str = setting("", "SMTP login (empty: no login).")
    smtp_password: str = setting("", "SMTP password.", secret=True)
    mail_from: str = setting("qrq@localhost", "Sender address of qrq's mail.")
    host: str = setting("127.0.0.1", "Address `qrq serve` and `qrq dev` bind the web app to.")
    port: int = setting(5000, "Port `qrq serve` and `qrq dev` bind the web app to.", low=1,
                        high=65535)
    log_level: str = setting("INFO", "Log level of the consumer and the web app.",
                             choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"))
    enqueue_sync: str = setting("full", "SQLite synchronous level of enqueues: full "
                                "(fsynced before the job id is returned) or normal "
                                "(faster; a power cut may lose the newest enqueues).",
                                choices=("full", "normal"))
    backup_dir: str = setting("", "Directory of the backup sets (relative: inside the "
                              "data dir). Empty: `<data>/backups`.")
    backup_schedule: str = setting("0 2 * * *", "When the backup runs, as a crontab "
                                   "(M H DOM MON DOW) in backup_timezone; empty: never on "
                                   "its own.", check=_check_cron)
    backup_timezone: str = setting("UTC", "Time zone of backup_schedule, "
                                   "maintenance_schedule and of the retention's days, "
                                   "weeks and months (UTC or an IANA name).",
                                   check=_check_zone)
    backup_keep_daily: int = setting(7, "Backup sets kept: the newest of each of the last "
                                     "N days.", low=0)
    backup_keep_weekly: int = setting(4, "... and of each of the last N weeks.", low=0)
    backup_keep_monthly: int = setting(12, "... and of each of the last N months.", low=0)
    backup_codec: str = setting("zstd", "Compression of backups: zstd (fast) or gzip.",
                                choices=("zstd", "gzip"))
    backup_threads: int = setting(2, "Databases backed up at once.", low=1, high=64)
    backup_timeout: int = setting(21600, "Time limit of a backup job, in seconds.", low=1)
    maintenance_schedule: str = setting("0 3 * * 0", "When the weekly maintenance runs "
                                        "(log rotation, WAL checkpoint, VACUUM when idle), "
                                        "as a crontab.", check=_check_cron)
    log_max_age_days: float = setting(30.0, "Days rotated log files in `<data>/logs/` are "
                                      "kept.", low=0)
    maintenance_vacuum: bool = setting(True, "VACUUM the queue and app databases during "
                                       "maintenance when no job is running or queued.")
    alert_backlog: int = setting(100, "Queued jobs (all types) above which the backlog "
                                 "alert fires.", low=0)
    alert_queue_age: float = setting(600.0, "Seconds the oldest queued job may wait before "
                                     "the queue-age alert fires.", low=0)
    alert_heartbeat_age: float = setting(90.0, "Seconds without a consumer heartbeat "
                                         "before the no-consumer alert fires; also the "
                                         "limit of `qrq health --consumer`.", low=1)
    alert_backup_age: float = setting(93600.0, "Seconds since the last successful backup "
                                      "(a consumer's first start, before one) after which "
                                      "the backup-age alert fires, once a scheduled backup "
                                      "was due since; 26 h suits a nightly schedule.", low=60)
    alert_mail_interval: float = setting(3600.0, "Least seconds between two alert mails "
                                         "of one kind.", low=0)
    alert_mail_to: str = setting("", "Extra alert mail recipients, comma-separated; admins "
                                 "with an e-mail address always get them.")
    metrics_token: str = setting("", "Bearer token that GET /metrics accepts (for "
                                 "Prometheus). Empty: only an admin's or operator's API token.",
                                 secret=True)
    secure_cookies: bool = setting(False, "Send the dashboard's session cookie over HTTPS "
                                   "only (turn on behind TLS).")
    trusted_proxies: int = setting(0, "Reverse proxies in front of the web app (nginx, a "
                                   "load balancer) whose `X-Forwarded-For`, `-Proto`, `-Host` "
                                   "and `-Prefix` headers are believed, so that failed log-ins "
                                   "and bad tokens count against each client's address. 0: "
                                   "the headers are ignored (behind a proxy every client then "
                                   "shares its address, and one client's failures lock out "
                                   "all).", low=0, high=10)
    max_batch_items: int = setting(10_000, "Most items one bulk-generation batch may hold "
                                   "(more: 413).", low=1)
    max_batch_bytes: int = setting(16 * 1024 * 1024, "Largest accepted body of a batch "
                                   "request, in bytes.", low=1)
    batch_timeout: int = setting(1800, "Time limit of one run of a batch job, in seconds.",
                                 low=1)
    base_url: str = setting("", "Public URL of the web app, for the links in mail and the "
                            "API's paging `Link` headers. Empty: http://<host>:<port> in "
                            "mail, the request's scheme and `Host` in `Link`.",
                            check=_check_url)
    analytics_dbs: str = setting("analytics", "Where the scan databases are: a directory "
                                 "(its *.db files) or a glob pattern; relative paths are "
                                 "inside the data dir.")
    analytics_cache_ttl: float = setting(3600.0, "Seconds a computed analytics report is "
                                         "served from the cache.", low=0)
    analytics_timeout: int = setting(600, "Time limit of an analytics job, in seconds.",
                                     low=1)
    analytics_processes: int = setting(2, "Child processes an analytics job reads the "
                                       "scan databases with (its own process waits).",
                                       low=1, high=64)
    analytics_warmup: int = setting(10, "Most-requested analytics reports the warm-up "
                                    "task recomputes before they expire (0: none).", low=0)
    max_waiters: int = setting(4, "Requests that may wait for a job at once on a server "
                               "thread in one web process (`?wait=`, the events stream): "
                               "under servers that cannot park waiters (`waitress-serve`, "
                               "gunicorn) and past `qrq serve`'s parking places; keep it "
                               "below the thread count (8). More are answered at once.",
                               low=0, high=1000)
    artifact_store: str = setting("", "Where job outputs (PDFs, ZIPs) are kept: a directory "
                                  "that must exist (relative: inside the data dir; a shared "
                                  "mount such as NFS for several hosts) or "
                                  "s3://bucket/prefix. Empty: `<data>/artifacts`, created "
                                  "as needed.", check=_check_artifact_store)
    s3_endpoint_url: str = setting("", "Endpoint of an S3-compatible store (MinIO, R2, "
                                   "...), addressed path-style. Empty: AWS S3. Credentials "
                                   "and region come from boto3's standard chain.",
                                   check=_check_url)
    s3_download: str = setting("redirect", "How a download from an S3 store is served: "
                               "redirect (302 to a short-lived presigned URL) or stream "
                               "(through the web app).", choices=("redirect", "stream"))
    s3_url_expiry: int = setting(300, "Seconds a presigned download URL stays valid.",
                                 low=1, high=604800)
    webhook_secret: str = setting("", "Secret that signs webhook deliveries of users without "
                                  "their own (empty: derived from the secret key).",
                                  secret=True)
    webhook_allow_private: bool = setting(False, "Allow webhook callback URLs on private, "
                                          "loopback and link-local addresses (refused by "
                                          "default: a server-side request forgery guard).")

    def __post_init__(self) -> None:
        for one in SETTINGS:
            one.check(getattr(self, one.name))

    @property
    def queue_db(self) -> Path:
        return self.data_dir / "queue.db"

    @property
    def app_db(self) -> Path:
        return self.data_dir / "app.db"

    @property
    def artifacts_dir(self) -> Path:
        """The directory artifact store's directory; with an S3 store, where its uploads
        are staged (``<data>/artifacts``)."""
        if not self.artifact_store or s3_location(self.artifact_store):
            return self.data_dir / "artifacts"
        return self.data_dir / self.artifact_store  # an absolute one wins the join

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
    def accept_types(self) -> tuple[str, ...]:
        """``worker_job_types`` as a tuple (empty: every type)."""
        return _type_list(self.worker_job_types)

    @property
    def exclude_types(self) -> tuple[str, ...]:
        """``worker_exclude_job_types`` as a tuple."""
        return _type_list(self.worker_exclude_job_types)

    @property
    def roles(self) -> dict[str, tuple[str, ...]]:
        """The host's role as the queue storage takes it (``accept_types``,
        ``exclude_types``)."""
        return {"accept_types": self.accept_types, "exclude_types": self.exclude_types}

    @property
    def secret_file(self) -> Path:
        return self.data_dir / "secret.key"

    @property
    def moved_marker(self) -> Path:
        """Left by ``qrq migrate-to-postgres``: the SQLite files beside it are the past."""
        return self.data_dir / "MOVED-TO-POSTGRESQL.txt"

    @property
    def private_paths(self) -> tuple[Path, ...]:
        """The directories qrq creates under the data directory."""
        return (self.data_dir, self.artifacts_dir, self.logs_dir, self.outbox_dir,
                self.backups_dir)

    def ensure_dirs(self) -> None:
        # A configured artifact directory is never created: a shared mount that is not
        # mounted must show as missing, not fill the local disk.
        configured = self.artifact_store and not s3_location(self.artifact_store)
        for path in (self.data_dir, None if configured else self.artifacts_dir, self.logs_dir):
            if path is not None:
                path.mkdir(mode=0o700, parents=True, exist_ok=True)
        make_private(self)


SETTINGS = tuple(Setting.from_field(f) for f in dataclasses.fields(Settings))
SETTINGS_BY_NAME = {s.name: s for s in SETTINGS}
