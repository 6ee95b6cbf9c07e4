"""API authentication: ``Authorization: Bearer <token>``, checked against a hash."""

from __future__ import annotations

import functools
from collections.abc import Callable

from flask import g, request

from qrq.appdb.models import User
from qrq.errors import Forbidden, Unauthorized


def current_user() -> User:
    """The user whose token came with this request.

    :raises Unauthorized: no token, a malformed header, or an unknown token.
    """
    if "user" not in g:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or len(token) > 200:
            raise Unauthorized("send Authorization: Bearer <token>")
        user = User.from_token(token)
        if user is None:
            raise Unauthorized("invalid API token")
        g.user = user
    return g.user


def login_required(view: Callable) -> Callable:
    @functools.wraps(view)
    def wrapped(*args, **kwargs):
        current_user()
        return view(*args, **kwargs)
    return wrapped


def admin_required(view: Callable) -> Callable:
    @functools.wraps(view)
    def wrapped(*args, **kwargs):
        if not current_user().is_admin:
            raise Forbidden("admins only")
        return view(*args, **kwargs)
    return wrapped
