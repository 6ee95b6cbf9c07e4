"""Numbers for people: one way to write a size in bytes, in the CLI and the dashboard."""

from __future__ import annotations

_UNITS = ("KiB", "MiB", "GiB", "TiB")


def format_bytes(size: int | float) -> str:
    """*size* in binary units, labelled as such: ``512 B``, ``1.5 KiB``, ``2.0 GiB``."""
    if size < 1024:
        return f"{size:.0f} B"
    for unit in _UNITS:
        size /= 1024
        if size < 1024 or unit == _UNITS[-1]:
            return f"{size:,.1f} {unit}"
    raise AssertionError("unreachable")
