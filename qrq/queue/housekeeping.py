"""Submitting the maintenance job: on demand (``qrq maintenance run``) or as a catch-up."""

from __future__ import annotations

from qrq.queue import submit


def submit_maintenance(kind: str = "manual", due_at: float | None = None) -> str:
    """Queue one maintenance run of *kind*; *due_at* is the missed run a catch-up covers."""
    if due_at is None:
        return submit("maintenance.run", kind, owner_id=None, params={"kind": kind})
    return submit("maintenance.run", kind, due_at, owner_id=None,
                  params={"kind": kind, "due_at": due_at})
