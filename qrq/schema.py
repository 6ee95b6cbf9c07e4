"""The tables qrq adds to the queue database, beside huey's own (task, schedule, kv, counter).

Everything the web app reads about work in progress lives in this one file, so a
job's record commits in the same transaction as the queue change that causes it.
Add new tables here; the storage creates them all when it opens the file.
"""

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
    " traceback text)",
    "create index if not exists job_owner_created on job (owner_id, created_at)",
    "create index if not exists job_status_type on job (status, type)",
    "create index if not exists job_finished on job (finished_at)",
]

# One row per running consumer process, renewed by its heartbeat.
CONSUMERS = [
    "create table if not exists consumer ("
    " id text primary key,"
    " host text not null,"
    " pid integer not null,"
    " started_at real not null,"
    " heartbeat_at real not null,"
    " workers integer not null default 0)",
]

QUEUE_DDL = [*JOBS, *CONSUMERS]
