"""Backup sets: reading and checking manifests, listing, choosing databases, verifying.

A set is ``<backups>/<set id>/`` with ``manifest.json`` and one compressed file per
database. A set whose manifest cannot be read or does not make sense is *damaged*:
it is listed as such (never hidden), it is not restored, and retention leaves it
for the operator to look at.
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath
from typing import Any

from qrq.backup import postgres
from qrq.backup.archive import CODECS, verify_entry
from qrq.errors import Conflict, NotFound, ValidationError

MANIFEST = "manifest.json"
SET_ID = re.compile(r"\d{8}T\d{6}Z(-\d+)?")
STATUSES = ("ok", "partial", "failed")
NUMBER = (int, float)


class DamagedBackup(Conflict):
    """The backup set is damaged."""

    code = "damaged_backup"


def _safe_path(value: Any) -> bool:
    """A relative path that stays inside its directory (a manifest names files with it)."""
    if not isinstance(value, str) or not value or "\\" in value or "\0" in value:
        return False
    path = PurePosixPath(value)
    return not path.is_absolute() and ".." not in path.parts and path.name not in ("", ".")


def _problem(manifest: Any, set_id: str) -> str | None:
    """What makes a parsed manifest unusable, or None."""
    if not isinstance(manifest, dict):
        return "not a JSON object"
    if manifest.get("id") != set_id:
        return f"its id {manifest.get('id')!r} is not the directory's name"
    if manifest.get("status") not in STATUSES:
        return f"unknown status {manifest.get('status')!r}"
    for key, kinds in (("kind", str), ("created_at", str), ("ok", int), ("failed", int),
                       ("size", int), ("compressed_size", int), ("duration", NUMBER),
                       ("databases", list)):
        if not isinstance(manifest.get(key), kinds):
            return f"{key!r} is missing or has the wrong type"
    try:
        datetime.datetime.fromisoformat(manifest["created_at"].replace("Z", "+00:00"))
    except ValueError:
        return f"created_at {manifest['created_at']!r} is not a time"
    for entry in manifest["databases"]:
        if not isinstance(entry, dict) or not _safe_path(entry.get("name")) \
                or not _safe_path(entry.get("file")):
            return f"a database entry has no usable name and file: {str(entry)[:80]}"
        if not isinstance(entry.get("duration"), NUMBER) or not isinstance(
                entry.get("status"), str):
            return f"the entry of {entry['name']} lacks its status or duration"
        if entry["status"] == "ok" and (
                entry.get("codec") not in (*CODECS, postgres.CODEC)
                or not isinstance(entry.get("db_sha256"), str)
                or not isinstance(entry.get("sha256"), str)
                or not isinstance(entry.get("size"), int)
                or not isinstance(entry.get("tables"), dict)):
            return f"the entry of {entry['name']} lacks its codec, sizes, sha256 or row counts"
    secret = manifest.get("secret")
    if secret is not None and not (isinstance(secret, dict)
                                   and isinstance(secret.get("fingerprint"), str)
                                   and (secret.get("file") is None
                                        or _safe_path(secret["file"]))):
        return "its 'secret' entry is not usable"
    return None


def read_manifest(set_dir: Path) -> dict[str, Any]:
    """The manifest of the set in *set_dir*, checked.

    :raises DamagedBackup: missing, unreadable, not JSON, or not a usable manifest;
        the message names the file.
    """
    where = f"{set_dir.name}/{MANIFEST}"
    try:
        text = (set_dir / MANIFEST).read_text()
    except FileNotFoundError:
        raise DamagedBackup(f"backup set {set_dir.name} is damaged: {where} is missing") \
            from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DamagedBackup(f"backup set {set_dir.name} is damaged: {where} cannot be "
                            f"read ({exc})") from None
    try:
        manifest = json.loads(text)
    except ValueError as exc:
        raise DamagedBackup(f"backup set {set_dir.name} is damaged: {where} is not valid "
                            f"JSON ({exc})") from None
    problem = _problem(manifest, set_dir.name)
    if problem:
        raise DamagedBackup(f"backup set {set_dir.name} is damaged: {where}: {problem}")
    return manifest


def _damaged(set_dir: Path, error: str) -> dict[str, Any]:
    """The listing's record of a set whose manifest cannot be used."""
    try:
        when = datetime.datetime.strptime(set_dir.name[:16], "%Y%m%dT%H%M%SZ")
    except ValueError:
        when = datetime.datetime.fromtimestamp(set_dir.stat().st_mtime, datetime.UTC)
    created = when.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"id": set_dir.name, "kind": "unknown", "created_at": created, "status": "damaged",
            "ok": 0, "failed": 0, "reused": 0, "size": 0, "compressed_size": 0,
            "duration": 0.0, "databases": [], "error": error}


def list_sets(backups: Path) -> list[dict[str, Any]]:
    """The finished sets' manifests, newest first; a damaged set is listed with status
    ``damaged``, no databases and its ``error``. Partial runs (``.partial-*``) are not sets;
    a directory is a set when it holds a manifest or is named like one."""
    manifests = []
    if backups.is_dir():
        for path in backups.iterdir():
            if path.name.startswith(".") or not path.is_dir():
                continue
            if not (path / MANIFEST).exists() and not SET_ID.fullmatch(path.name):
                continue  # not a set (lost+found, say)
            try:
                manifests.append(read_manifest(path))
            except DamagedBackup as exc:
                manifests.append(_damaged(path, exc.message))
    return sorted(manifests, key=lambda m: (m["created_at"], m["id"]), reverse=True)


def set_exists(backups: Path, set_id: Any) -> bool:
    """Whether the set *set_id* is still in *backups* (retention may have removed it)."""
    return isinstance(set_id, str) and SET_ID.fullmatch(set_id) is not None \
        and (backups / set_id).is_dir()


def usable_sets(backups: Path) -> list[dict[str, Any]]:
    """:func:`list_sets` without the damaged sets."""
    return [m for m in list_sets(backups) if m["status"] != "damaged"]


def get_set(backups: Path, set_id: str) -> dict[str, Any]:
    """A set's manifest by id; ``latest`` is the newest set with a good database that
    is not a ``safety`` set (what a restore replaced: named by its id when wanted).

    :raises NotFound: no such set. :raises DamagedBackup: its manifest is damaged.
    """
    sets = list_sets(backups)
    if set_id == "latest":
        good = [m for m in sets if m["ok"] and m.get("kind") != "safety"]
        if not good:
            raise NotFound(f"no backup with a good database in {backups}")
        return good[0]
    for manifest in sets:
        if manifest["id"] == set_id:
            if manifest["status"] == "damaged":
                raise DamagedBackup(manifest["error"])
            return manifest
    raise NotFound(f"no backup set {set_id!r} in {backups}")


def select_entries(manifest: dict, names: Iterable[str] = ()) -> list[dict]:
    """The manifest's good entries named by *names* (a name, or its file stem); all
    good entries when *names* is empty.

    :raises ValidationError: a name matches no database, or more than one.
    """
    good = [e for e in manifest["databases"] if e["status"] == "ok"]
    names = list(names)
    if not names:
        return good
    chosen = []
    for wanted in names:
        matches = [e for e in manifest["databases"]
                   if wanted in (e["name"], Path(e["name"]).stem)]
        if len(matches) != 1:
            known = ", ".join(e["name"] for e in manifest["databases"][:20])
            raise ValidationError(f"{wanted!r} matches {len(matches)} databases in set "
                                  f"{manifest['id']} (names: {known}...)", field="db")
        if matches[0]["status"] != "ok":
            raise ValidationError(f"{wanted!r} failed in set {manifest['id']}: "
                                  f"{matches[0]['error']}", field="db")
        chosen.append(matches[0])
    return chosen


def verify_set(backups: Path, manifest: dict, *,
               report: Callable[[dict, list[str]], None] = lambda entry, problems: None,
               database_url: str = "") -> dict[str, list[str]]:
    """Check every database of a set again; return ``{name: problems}``. One whose
    backup failed when the set was made is a problem too: the set has no copy of it.

    A PostgreSQL dump is restored into a scratch database on *database_url*'s server.
    """
    set_dir = backups / manifest["id"]
    results = {}
    for entry in manifest["databases"]:
        if entry["status"] != "ok":
            results[entry["name"]] = ["not in the set: its backup failed "
                                      f"({entry.get('error') or 'no reason recorded'})"]
        elif entry["codec"] == postgres.CODEC:
            results[entry["name"]] = postgres.verify_entry(set_dir, entry, database_url)
        else:
            results[entry["name"]] = verify_entry(set_dir, entry, set_dir)
        report(entry, results[entry["name"]])
    return results
