"""The queue database's tables: huey's own (task, schedule, kv, counter, with qrq's
lease columns) and the ones qrq adds.

Everything the web app reads about work in progress lives in this one database, so
a job's record commits in the same transaction as the queue change that causes it.
The DDL is written for SQLite; on PostgreSQL :func:`qrq.queue.pg_dialect.ddl` maps
its types. A new table: its ``create ... if not exists`` here (run at every open);
any change to an existing table: a numbered step in :mod:`qrq.queue.migrations`.
"""

from huey.storage import SqliteStorage

# huey's tables, with the columns qrq adds: the job a row runs and its type (caps),
# and the lease (lease_until in the database's clock, lease_owner).
HUEY = [
    SqliteStorage.table_kv,
    "create table if not exists schedule ("
    "id integer not null primary key, queue text not null, "
    "data blob not null, timestamp real not null, "
    "job_id text, job_type text, priority real not null default 0.0)",
    SqliteStorage.index_sched,
    "create table if not exists task ("
    "id integer not null primary key, queue text not null, "
    "data blob not null, priority real not null default 0.0, "
    "job_id text, job_type text, lease_until real, lease_owner text)",
    SqliteStorage.index_task,
    SqliteStorage.table_counter,
]

# The unfinished states, as the condition of the partial index job_active: a query
# names them the same way (or a subset: "status = 'queued'") to use it.
ACTIVE_SQL = "(status = 'queued' or status = 'running' or status = 'retrying')"

JOBS = [
    "create table if not exists job ("
    " id text primary key,"
    " type text not null,"
    " name text not null,"
    " owner_id integer,"
    " status text not null default 'queued',"
    " progress integer not null default 0,"
    " stage text not null default '',"
    " params text not null default '{}',"
    " attempts integer not null default 0,"
    " worker text,"
    " created_at real not null,"
    " started_at real,"
    " finished_at real,"
    " next_attempt_at real,"
    " cancel_requested integer not null default 0,"
    " payload blob,"
    " result text,"
    " error text,"
    " traceback text,"
    " idempotency_key text,"
    " request_hash text)",
    # Every job state change (queued, running, ended) rewrites each index whose key or
    # condition it touches, one 4 KiB page each per commit: indexes on columns that
    # never change (type, owner, creation time), and two partial ones, so each change
    # touches at most one index page. tests/test_query_plans.py shows each one in use.
    "create index if not exists job_owner_created on job (owner_id, created_at)",
    "create index if not exists job_type_created on job (type, created_at)",
    # Unfinished jobs: the per-user limit counts them at every submit, the dashboard
    # counts the backlog. Written as ORs so "status = 'queued'" alone implies it.
    "create index if not exists job_active on job (owner_id, type) where "
    f"{ACTIVE_SQL}",
    # Ended jobs by when they ended: throughput, run times, retention.
    "create index if not exists job_ended on job (status, type, finished_at) "
    "where finished_at is not null",
    # Replaced by the four above (their keys changed with every state change).
    *(f"drop index if exists {name}" for name in (
        "job_owner_active", "job_status_type", "job_finished", "job_type_status_finished")),
]

# One row per running consumer process, renewed by its heartbeat.
CONSUMERS = [
    "create table if not exists consumer ("
    " id text primary key,"
    " host text not null,"
    " pid integer not null,"
    " started_at real not null,"
    " heartbeat_at real not null,"
    " workers integer not null default 0,"
    # The host's role (comma-separated job types; null: every type / none excluded).
    " job_types text,"
    " exclude_job_types text)",
]

# One row per alert kind (qrq/alerts.py): whether it is firing, since when, and
# when it was last mailed, so several processes send at most one mail per interval.
ALERTS = [
    "create table if not exists alert ("
    " kind text primary key,"
    " active integer not null default 0,"
    " message text not null default '',"
    " since real,"
    " checked_at real,"
    " mailed_at real)",
]

# Run locks of backups and maintenance (qrq/queue/locks.py): a lock held by at most
# one run, renewed while it runs and lapsing if its process dies; and per-schedule
# state (when the schedule was first seen, the last due time claimed for a catch-up,
# the start of the last successful and of the last failed run), so a missed run is
# caught up exactly once and a failed backup raises an alert.
LOCKS = [
    "create table if not exists maintenance_lock ("
    " name text primary key,"
    " holder text not null,"
    " acquired_at real not null,"
    " expires_at real not null)",
    "create table if not exists maintenance_state ("
    " key text primary key,"
    " value real not null)",
]

# Bulk generation (qrq/batch.py): one row per batch job, one per item keyed by
# (job_id, idx) with its status, packed QR matrix or error; counts are kept on the
# batch row. Both go when their job row is deleted (retention, purge).
BATCHES = [
    "create table if not exists batch ("
    " job_id text primary key,"
    " parent_id text,"
    " owner_id integer,"
    " total integer not null,"
    " completed integer not null default 0,"
    " failed integer not null default 0,"
    " options text not null default '{}',"
    " mail_job_id text,"
    " outputs text,"
    " created_at real not null)",
    "create table if not exists batch_item ("
    " job_id text not null,"
    " idx integer not null,"
    " template_id integer not null,"
    " data text not null,"
    " title text,"
    " lines text,"
    " status text not null default 'pending',"
    " matrix blob,"
    " error text,"
    " source_idx integer,"
    " primary key (job_id, idx)) without rowid",
    "create index if not exists batch_item_status on batch_item (job_id, status, idx)",
    # A batch's retries (few batches have a parent): the retry check, the batch's page.
    "create index if not exists batch_parent on batch (parent_id, created_at) "
    "where parent_id is not null",
]

# Analytics reports (qrq/analytics/cache.py): one row per normalised report with its
# last result, the job computing it now, and how often it is asked for.
ANALYTICS = [
    "create table if not exists analytics_cache ("
    " cache_key text primary key,"
    " params text not null,"
    " request text not null,"
    " job_id text,"
    " claimed_at real,"
    " result text,"
    " computed_at real,"
    " expires_at real,"
    " requests integer not null default 0,"
    " requested_at real not null)",
    "create index if not exists analytics_cache_requested on analytics_cache "
    "(requested_at)",
    # Who waits for each shared job (qrq/analytics/requesters.py): one requester's
    # cancel withdraws only their request. User 0: the CLI and the warm-up.
    "create table if not exists analytics_requester ("
    " job_id text not null,"
    " user_id integer not null,"
    " withdrawn integer not null default 0,"
    " primary key (job_id, user_id)) without rowid",
]

# Webhooks (qrq/webhooks.py): where a job's end is posted (written before the job is
# enqueued, gone with the job row), each user's default callback URL, and how often a
# user replaced their webhook secret (no row: never).
WEBHOOKS = [
    "create table if not exists webhook_target ("
    " job_id text primary key,"
    " owner_id integer,"
    " url text not null,"
    " created_at real not null) without rowid",
    "create table if not exists webhook_default ("
    " owner_id integer primary key,"
    " url text not null)",
    "create table if not exists webhook_secret ("
    " owner_id integer primary key,"
    " generation integer not null,"
    " rotated_at real not null)",
]

# Who did what (qrq/queue/audit.py): one row per action taken on the dashboard, the
# admin API or the CLI, with the jobs it touched (a bounded list; job_count is the
# true total). Kept as long as ended jobs are (qrq/queue/retention.py).
AUDIT = [
    "create table if not exists audit ("
    " id text primary key,"
    " created_at real not null,"
    " actor text not null,"
    " action text not null,"
    " job_count integer not null default 0,"
    " job_ids text not null default '[]',"
    " detail text not null default '{}')",
    "create index if not exists audit_created on audit (created_at)",
    "create index if not exists audit_actor_created on audit (actor, created_at)",
    "create index if not exists audit_action_created on audit (action, created_at)",
]

# Rows that belong to a job and go when its record is deleted (retention deletes
# them in the same transaction): (table, column naming the job).
JOB_DEPENDENTS = [("batch_item", "job_id"), ("batch", "job_id"),
                  ("analytics_requester", "job_id"), ("webhook_target", "job_id")]

# Columns added to tables before schema versions existed: migration step 1 adds
# what a file made by an older qrq lacks, then runs LATE_DDL, as it may index them.
ADDED_COLUMNS = {
    "task": ("job_id text", "job_type text", "lease_until real", "lease_owner text"),
    "schedule": ("job_id text", "job_type text", "priority real not null default 0.0"),
    # The client's Idempotency-Key of the request that made the job, and a digest of
    # that request's body (qrq/queue/admission.py); cleared after 24 h by retention.
    "job": ("idempotency_key text", "request_hash text"),
}
LATE_DDL = [
    "create unique index if not exists job_idempotency on job (owner_id, idempotency_key) "
    "where idempotency_key is not null",
    # The running rows, for the per-type caps checked at every capped dequeue;
    # without it that check scans the whole backlog.
    "create index if not exists task_leased on task (queue, lease_until) "
    "where lease_until is not null",
]

QUEUE_DDL = [*JOBS, *CONSUMERS, *ALERTS, *LOCKS, *BATCHES, *ANALYTICS, *WEBHOOKS, *AUDIT]

# Each run of a job (qrq/queue/attempts.py): who ran it, when, and how it ended; the
# job row keeps only the last error. Deleted with the job row by retention and purge.
ATTEMPTS = [
    "create table if not exists job_attempt ("
    " job_id text not null,"
    " n integer not null,"
    " worker text,"
    " started_at real not null,"
    " ended_at real,"
    " outcome text,"
    " error text,"
    " primary key (job_id, n))",
]
QUEUE_DDL.extend(ATTEMPTS)

# Paused job types (qrq/queue/pauses.py): consumers lease no new job of a type listed
# here; its queued jobs wait until it is resumed. Never null: the dequeue's
# "not in (select job_type ...)" would then exclude every row.
PAUSES = [
    "create table if not exists paused_type ("
    " job_type text not null primary key,"
    " paused_at real not null,"
    " paused_by text not null default '')",
]
QUEUE_DDL.extend(PAUSES)

# The queue's signing key (qrq/queue/signing.py): the fingerprint of the key the first
# process used, so that a host started with another key is refused at once, even when
# no job waits to show it. One row.
KEY = [
    "create table if not exists queue_key ("
    " id integer primary key check (id = 1),"
    " fingerprint text not null,"
    " host text not null default '',"
    " recorded_at real not null)",
]
QUEUE_DDL.extend(KEY)

# The artifact store the hosts share (qrq/artifacts/identity.py): the id of the marker
# object in the store the first process used, so that a host naming another store is
# told at start. One row.
ARTIFACT_STORE = [
    "create table if not exists artifact_store ("
    " id integer primary key check (id = 1),"
    " store_id text not null,"
    " location text not null,"
    " host text not null default '',"
    " recorded_at real not null)",
]
QUEUE_DDL.extend(ARTIFACT_STORE)
