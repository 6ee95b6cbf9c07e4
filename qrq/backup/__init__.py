"""Backups of every SQLite database qrq knows: snapshot, compress, verify, restore, retain.

A backup *set* is one run: ``<backups>/<set id>/manifest.json``, one compressed
file per database and the key that signs the queue. The family:

- :mod:`~qrq.backup.selection`: which databases, and whether a file changed;
- :mod:`~qrq.backup.archive`: one database's snapshot, compression and check;
- :mod:`~qrq.backup.runs`: a run, every database into a new set;
- :mod:`~qrq.backup.sets`: manifests, listing (damaged sets too), verifying;
- :mod:`~qrq.backup.secret`: the queue's signing key in a set;
- :mod:`~qrq.backup.restore`: restoring a set, all checked before anything is replaced;
- :mod:`~qrq.backup.retention`: which sets to keep;
- :mod:`~qrq.backup.jobs`: runs as jobs (lock, schedule, report mail);
- :mod:`~qrq.backup.files`: private files (0600/0700 whatever the umask), disk space.

The public functions are importable from here.
"""

from qrq.backup.archive import Stopped, verify_entry
from qrq.backup.files import InsufficientSpace
from qrq.backup.restore import restore
from qrq.backup.retention import apply_retention, plan_retention
from qrq.backup.runs import backup_database, run_backup
from qrq.backup.secret import WrongKey, environment_key
from qrq.backup.selection import list_databases
from qrq.backup.sets import DamagedBackup, get_set, list_sets, select_entries, verify_set

__all__ = [
    "DamagedBackup", "InsufficientSpace", "Stopped", "WrongKey", "apply_retention",
    "backup_database", "environment_key", "get_set", "list_databases", "list_sets",
    "plan_retention", "restore", "run_backup", "select_entries", "verify_entry",
    "verify_set",
]
