"""Log rotation: qrq's ``*.log`` files are copied to dated ``.gz`` files and truncated,
and rotated files past their age are deleted (part of the weekly maintenance)."""

from __future__ import annotations

import datetime
import gzip
import os
import re
import shutil
import time
from pathlib import Path

_ROTATED = re.compile(r".+\.log\.(\d{8}T\d{6}Z)(?:-\d+)?(\.gz)?")


def rotate_logs(logs_dir: Path, max_age_days: float, now: float | None = None) -> dict:
    """Rotate, compress and delete qrq's log files in *logs_dir*.

    Each non-empty ``*.log`` is copied to ``<name>.<UTC time>.gz`` and truncated in
    place (processes keep their open handle; they write in append mode, so the
    next line lands at the start). Rotated files older than *max_age_days* go.
    Lines written between the copy and the truncation are lost (as with
    logrotate's copytruncate); rotation runs at a quiet hour.
    """
    now = time.time() if now is None else now
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    report: dict[str, list[str]] = {"rotated": [], "deleted": []}
    if not logs_dir.is_dir():
        return report
    for log in sorted(logs_dir.glob("*.log")):
        if not log.is_file() or log.stat().st_size == 0:
            continue
        target, n = logs_dir / f"{log.name}.{stamp}.gz", 1
        while target.exists():
            n += 1
            target = logs_dir / f"{log.name}.{stamp}-{n}.gz"
        tmp = target.with_name(f".{target.name}.tmp")
        with open(log, "rb") as src, gzip.open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        os.replace(tmp, target)
        os.truncate(log, 0)
        report["rotated"].append(target.name)
    cutoff = now - max_age_days * 86400
    for path in sorted(logs_dir.iterdir()):
        match = _ROTATED.fullmatch(path.name)
        if not match:
            continue
        if not match[2]:  # rotated by someone else and left plain: compress it
            with open(path, "rb") as src, gzip.open(f"{path}.gz", "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            path.unlink()
            path = Path(f"{path}.gz")
        rotated_at = datetime.datetime.strptime(match[1], "%Y%m%dT%H%M%SZ").replace(
            tzinfo=datetime.UTC).timestamp()
        if rotated_at < cutoff:
            path.unlink(missing_ok=True)
            report["deleted"].append(path.name)
    return report
