"""What one setting is: declared as a field of :class:`~qrq.config.settings.Settings`
with :func:`setting`, read back as a :class:`Setting` row that parses, checks and
describes its value (for errors and the README's table).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any


class SettingsError(ValueError):
    """A ``QRQ_*`` variable holds a value its setting does not allow."""


def setting(default: Any, help: str, *, choices: tuple[str, ...] = (),
            low: float | None = None, high: float | None = None,
            check: Callable[[Any], Any] | None = None, secret: bool = False) -> Any:
    """Declare one setting as a field of :class:`Settings` (its type is the annotation).

    *choices*, *low*/*high* (inclusive) or *check* (raises ValueError) say what is
    allowed; a *secret* value is never repeated in an error.
    """
    return dataclasses.field(default=default, metadata={
        "help": help, "choices": choices, "low": low, "high": high, "check": check,
        "secret": secret})


_TYPES: dict[str, type] = {"int": int, "float": float, "bool": bool, "str": str,
                           "Path": Path}
# The largest number a setting without a *high* of its own takes: past it a value only
# overflows something (a C int of milliseconds, a SQLite INTEGER, a date), and no count,
# size or duration qrq reads needs more.
CEILING = {int: 2**31 - 1, float: 1e9}


@dataclasses.dataclass(frozen=True)
class Setting:
    """One row of the settings table, read from a field of :class:`Settings`."""

    name: str
    default: Any
    help: str
    type: type
    choices: tuple[str, ...] = ()
    low: float | None = None
    high: float | None = None
    validator: Callable[[Any], Any] | None = None
    secret: bool = False

    @classmethod
    def from_field(cls, field: dataclasses.Field) -> Setting:
        meta = field.metadata
        return cls(field.name, field.default, meta["help"], _TYPES[str(field.type)],
                   meta["choices"], meta["low"], meta["high"], meta["check"], meta["secret"])

    @property
    def env(self) -> str:
        return "QRQ_" + self.name.upper()

    @property
    def documented_default(self) -> str:
        """The default as the README's settings table writes it."""
        if self.default == "":
            return "(empty)"
        if isinstance(self.default, bool):
            return "`true`" if self.default else "`false`"
        if isinstance(self.default, float):
            return f"`{self.default:g}`"
        return f"`{self.default}`"

    @property
    def allowed(self) -> str:
        """What this setting accepts, in words (for errors and the README)."""
        if self.choices:
            return "one of " + ", ".join(self.choices)
        if self.type is bool:
            return "true or false (1/0, yes/no, on/off)"
        kind = {int: "an integer", float: "a number"}.get(self.type)
        if kind is None:
            return "text"
        if self.low is not None and self.high is not None:
            return f"{kind} from {self.low:g} to {self.high:g}"
        if self.low is not None:
            return f"{kind} of at least {self.low:g}"
        return kind

    @property
    def ceiling(self) -> float | None:
        """The largest value a number setting takes: its *high*, else :data:`CEILING`."""
        return self.high if self.high is not None else CEILING.get(self.type)

    def parse(self, text: str) -> Any:
        """The value of the environment text *text*; :raises ValueError:."""
        text = text if self.secret else text.strip()
        if self.type is Path and not text:
            # Path("") is the current directory: wherever the process happened to start.
            raise ValueError("expected a directory; unset the variable for the default "
                             f"({self.default})")
        if self.type is bool:
            lowered = text.lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(f"expected {self.allowed}")
        if self.type in (int, float):
            try:
                value = self.type(text)
            except ValueError:
                raise ValueError(f"expected {self.allowed}") from None
            if not math.isfinite(value):
                raise ValueError(f"expected {self.allowed}")
            return value
        if self.choices:  # any case in; the declared spelling out
            for choice in self.choices:
                if text.lower() == choice.lower():
                    return choice
        return self.type(text)

    def check(self, value: Any) -> None:
        """:raises SettingsError: *value* is not allowed, naming the variable."""
        try:
            if self.choices and value not in self.choices:
                raise ValueError(f"expected {self.allowed}")
            if self.type in (int, float) and (
                    isinstance(value, bool) or not isinstance(value, int | float)
                    or not math.isfinite(value)
                    or (self.low is not None and value < self.low)):
                raise ValueError(f"expected {self.allowed}")
            if self.type in (int, float) and value > self.ceiling:
                raise ValueError(f"expected {self.allowed}" + (
                    "" if self.high is not None else f", at most {self.ceiling:.0f}"))
            if self.validator is not None:
                self.validator(value)
        except ValueError as exc:
            raise SettingsError(f"{self.env}={self.shown(value)}: {exc}") from None

    def shown(self, value: Any) -> str:
        return "(hidden)" if self.secret and value else repr(str(value))
