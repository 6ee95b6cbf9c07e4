"""The one paging convention of every JSON list: ``limit`` plus an opaque ``cursor``.

A list answers one page and, when there is more, the URL of the next page twice:
``next`` in the body (its path and query, no host) and ``Link: <...>; rel="next"``
(RFC 8288, absolute: on the base_url setting when set). The cursor is
base64 of a small JSON position; clients pass it back as given and never build
one (its content may change between releases). A cursor that does not decode is
a ``422`` on ``cursor``.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from flask import Response, current_app, jsonify, request

from qrq.errors import ValidationError
from qrq.web.params import int_arg

MAX_CURSOR_CHARS = 500
_HOST = re.compile(r"(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")


@dataclass(frozen=True)
class Page:
    limit: int
    position: dict[str, Any] | None  # None: the first page


def encode_cursor(position: dict[str, Any]) -> str:
    raw = json.dumps(position, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(text: str) -> dict[str, Any]:
    """The position in *text*; :raises ValidationError: not a cursor this API gave out."""
    try:
        if len(text) > MAX_CURSOR_CHARS:
            raise ValueError("too long")
        position = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        if not isinstance(position, dict):
            raise ValueError("not an object")
        # JSON may hold a lone surrogate ("\ud800"), which no database takes as text
        # (encode raises UnicodeEncodeError, a ValueError), and NUL, which PostgreSQL's
        # text does not take. A position is flat.
        for value in position.values():
            if isinstance(value, str):
                value.encode()
                if "\x00" in value:
                    raise ValueError("NUL in a cursor")
        return position
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ValidationError("not a cursor from this API: pass the `next` link's cursor "
                              "as given", field="cursor") from None


def read_page(default: int, most: int, limit_name: str = "limit") -> Page:
    """``limit`` (1..*most*, default *default*) and the decoded ``cursor`` of this request."""
    raw = request.args.get("cursor")
    return Page(int_arg(limit_name, default, 1, most),
                None if raw in (None, "") else decode_cursor(raw))


def cursor_value(position: dict[str, Any], key: str, kind: type | tuple[type, ...],
                 low: float = 0, high: float = 2**53) -> Any:
    """One value of a decoded position, of the expected type and (numbers) from *low*
    to *high* (else 422 on ``cursor``)."""
    value = position.get(key)
    if (isinstance(value, bool) or not isinstance(value, kind)
            or (isinstance(value, (int, float)) and not low <= value <= high)):
        raise ValidationError("not a cursor from this API: pass the `next` link's cursor "
                              "as given", field="cursor")
    return value


def next_url(position: dict[str, Any] | None) -> str | None:
    """This request's URL with ``cursor`` set to *position* (and page/offset dropped)."""
    if position is None:
        return None
    args = [(k, v) for k, v in request.args.items(multi=True)
            if k not in ("cursor", "page", "offset")]
    args.append(("cursor", encode_cursor(position)))
    return f"{request.path}?{urlencode(args)}"


def _origin() -> str:
    """Where the app is reached, for an absolute link (clients follow it as it is): the
    base_url setting when set, so that a spoofed Host header (or a proxy's own) never
    sends a client's next request elsewhere; else ``scheme://host`` of this request
    and the path a proxy mounts the app under (``X-Forwarded-Prefix``, with
    QRQ_TRUSTED_PROXIES); else only that path, which leaves the link relative (RFC 8288
    resolves it against the request's URL), when the Host header the client sent is
    empty or malformed."""
    base_url = current_app.config["QRQ"].base_url
    if base_url:
        return base_url.rstrip("/")
    host = request.host_url.rstrip("/") if _HOST.fullmatch(request.host) else ""
    return host + request.script_root


def paged(body: dict[str, Any], position: dict[str, Any] | None) -> Response:
    """*body* with ``next`` (the next page's URL or None) as JSON, with its Link header."""
    url = next_url(position)
    response = jsonify({**body, "next": url})
    if url is not None:
        response.headers["Link"] = f'<{_origin()}{url}>; rel="next"'
    return response


def choice_arg(name: str, allowed: tuple[str, ...] | frozenset[str]) -> str | None:
    """The query parameter *name*, which must be one of *allowed* (else 422); None if absent."""
    value = request.args.get(name)
    if value is not None and value not in allowed:
        raise ValidationError(f"must be one of {', '.join(sorted(allowed))}", field=name)
    return value
