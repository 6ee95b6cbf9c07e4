"""Client input parsed in one place: JSON request bodies and integer parameters.

Everything a client sends passes through here before a view looks at it, so no
body or query string can reach a 5xx: JSON nested deeper than :data:`MAX_DEPTH`,
NaN or Infinity, a lone UTF-16 surrogate (``"\\ud800"``, which could never be
written out again as UTF-8), a query integer in non-ASCII digits or with
thousands of them, and a path id past SQLite's 64-bit range all get a 4xx in the
one error shape. Nor can a body or query string mean two things: a key given twice
in one JSON object, or a query parameter given twice, is a 422 naming it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from itertools import accumulate
from typing import Any

from flask import Flask, request
from werkzeug.routing import IntegerConverter

from qrq.errors import BadRequest, ValidationError

MAX_DEPTH = 32  # qrq's bodies nest four levels; anything deeper is not for us
MAX_ID = 2**63 - 1  # SQLite's largest INTEGER

# A string, or the rest of the text after an unclosed quote (where JSON decoding stops):
# every quote starts a match, so the scan never restarts from the next one (that was
# quadratic in the number of escaped quotes after an unclosed one).
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_DEPTH_STEP = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")  # +1 and -1 as signed bytes
_CHUNK = 1 << 16  # brackets summed at a time, so a deep body stops early
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_DIGITS = re.compile(r"[0-9]{1,30}")


class RowId(IntegerConverter):
    """The ``<int:...>`` route converter: ASCII digits that fit a SQLite INTEGER.

    Registered in place of werkzeug's, so every integer route refuses a larger id
    (or Unicode digits) as a 404 like any unknown one, instead of overflowing in
    the database driver.
    """

    regex = r"[0-9]{1,19}"

    def __init__(self, map, fixed_digits: int = 0, min: int | None = None,
                 max: int | None = None, signed: bool = False) -> None:
        min = -MAX_ID - 1 if min is None else min
        max = MAX_ID if max is None else max
        super().__init__(map, fixed_digits, min, max, signed)


def init_app(app: Flask) -> None:
    """Register :class:`RowId` as the app's ``int`` converter (before any route); a
    path with an empty segment (``/api/jobs//download``) is a 404 in the one error
    shape, not werkzeug's redirect to the path without it (an HTML body)."""
    app.url_map.converters["int"] = RowId
    app.url_map.merge_slashes = False
    app.before_request(_refuse_repeated_args)


def _refuse_repeated_args() -> None:
    """An API query parameter given twice is a 422: read by ``args.get`` the first
    would win silently (``?status=queued&status=bogus`` listed the queued jobs, while
    the other order was refused). No API parameter is a list."""
    if not request.path.startswith("/api/"):
        return
    for name in request.args:
        if len(request.args.getlist(name)) > 1:
            raise ValidationError("given more than once", field=name)


# -- integers ------------------------------------------------------------------------------

def parse_int(raw: str, field: str, low: int, high: int) -> int:
    """*raw* as an integer from *low* to *high*, or a 422 naming *field*.

    Only ASCII digits count: ``str.isdigit`` also accepts "²" and "٣", which
    ``int()`` then refuses or silently converts.
    """
    if not _DIGITS.fullmatch(raw) or not low <= int(raw) <= high:
        raise ValidationError(f"must be an integer from {low} to {high}", field=field)
    return int(raw)


def int_arg(name: str, default: int, low: int, high: int) -> int:
    """The query parameter *name* as an integer from *low* to *high*; *default* if absent."""
    raw = request.args.get(name)
    return default if raw is None else parse_int(raw, name, low, high)


def int_field(value: Any, field: str) -> int:
    """A JSON value that must be a positive integer that fits a SQLite INTEGER."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_ID:
        raise ValidationError("must be a positive integer", field=field)
    return value


# -- JSON bodies ---------------------------------------------------------------------------

def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def nests_within(text: str, limit: int = MAX_DEPTH) -> bool:
    """Whether *text*'s arrays and objects nest at most *limit* deep (without recursion),
    brackets inside strings not counted.

    One pass over the brackets left once strings are removed, summed in C a chunk at a
    time: a 16 MB body costs under a second, not the 7 to 15 s that removing the
    innermost pairs, a level a pass, cost. Pairing is left to JSON decoding.
    """
    if text.count("[") + text.count("{") <= limit:  # every small body
        return True
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text)).encode("ascii")
    steps = memoryview(brackets.translate(_DEPTH_STEP)).cast("b")
    depth = 0
    for start in range(0, len(steps), _CHUNK):
        depths = list(accumulate(steps[start:start + _CHUNK], initial=depth))
        if max(depths) > limit:
            return False
        depth = depths[-1]
    return True


class _RepeatedKey(dict):
    """A JSON object in which :attr:`key` was given more than once."""

    key: str


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object, marked when a key repeats: ``dict(pairs)`` would keep the last
    value silently, so ``{"copies": 1, "copies": 900}`` meant 900 to us and 1 to a
    reader (or a proxy's check) that keeps the first."""
    obj = dict(pairs)
    if len(obj) == len(pairs):
        return obj
    marked = _RepeatedKey(obj)
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            marked.key = key
            return marked
        seen.add(key)
    raise AssertionError("unreachable: fewer keys than pairs means a repeat")


def _field(path: str, key: str) -> str:
    # A key is named with its escapes, never echoed as a lone surrogate.
    name = key.encode("utf-8", "backslashreplace").decode("utf-8")
    return f"{path}.{name}" if path else name


def _walk(value: Any) -> Iterator[tuple[Any, str]]:
    """Every value (and key) in *value* with its field path (``items[3].data``), in
    document order, without recursion."""
    stack = [(value, "")]
    while stack:
        value, path = stack.pop()
        yield value, path
        if isinstance(value, dict):
            stack.extend(reversed([pair for key, item in value.items()
                                   for pair in ((key, _field(path, key)),
                                                (item, _field(path, key)))]))
        elif isinstance(value, list):
            stack.extend(reversed([(item, f"{path}[{i}]") for i, item in enumerate(value)]))


def _lone_surrogate(body: Any) -> str | None:
    """The path of the first string (or key) in *body* holding a lone surrogate."""
    for value, path in _walk(body):
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return path or None
    return None


def _repeated_key(body: Any) -> str | None:
    """The path of the first key given twice in one object of *body*."""
    for value, path in _walk(body):
        if isinstance(value, _RepeatedKey):
            return _field(path, value.key)
    return None


def json_value() -> Any:
    """The request's JSON body, parsed with qrq's limits.

    :raises BadRequest: not ``application/json``, not UTF-8, not JSON, nested
        deeper than :data:`MAX_DEPTH`.
    :raises ValidationError: a key given twice in one object; a string holding a lone
        UTF-16 surrogate.
    :raises PayloadTooLarge: (werkzeug's 413) over the request's size limit.
    """
    if not request.is_json:
        raise BadRequest("send a JSON body with Content-Type: application/json")
    try:
        text = request.get_data(cache=True).decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("the body is not UTF-8") from None
    if not nests_within(text):
        raise BadRequest(f"the body nests deeper than {MAX_DEPTH} levels")
    repeats: list[str] = []  # one entry per object with a repeated key

    def read_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj = _object(pairs)
        if isinstance(obj, _RepeatedKey):
            repeats.append(obj.key)
        return obj

    try:
        body = json.loads(text, parse_constant=_refuse_constant, object_pairs_hook=read_object)
    except (ValueError, RecursionError):
        raise BadRequest("the body is not valid JSON") from None
    if repeats:  # rare: only then walk the parsed body, for the key's path
        raise ValidationError("given more than once", field=_repeated_key(body))
    if _SURROGATE_ESCAPE.search(text):
        where = _lone_surrogate(body)
        if where is not None:
            raise ValidationError("holds a lone UTF-16 surrogate, which is not text",
                                  field=where)
    return body


def json_object(allowed: set[str] | None = None, required: set[str] = frozenset(),
                optional: bool = False) -> dict[str, Any]:
    """The request's JSON body as an object, with only *allowed* keys and all *required*.

    *optional*: an empty body reads as ``{}``. ``allowed=None`` lets any key through,
    for a caller that checks the keys itself.
    """
    if optional and not request.get_data(cache=True):
        return {}
    body = json_value()
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    for name in sorted(required - set(body)):
        raise ValidationError("is required", field=name)
    if allowed is not None:
        for name in sorted(set(body) - allowed):
            raise ValidationError(f"unknown field; expected {', '.join(sorted(allowed))}",
                                  field=name)
    return body
