"""API authentication: ``Authorization: Bearer <token>``, checked against a hash.

Bad tokens count against the client's address (:mod:`qrq.appdb.throttle`): after
a few, the address gets 429 with ``Retry-After`` for a while, good token or not.

Roles (:data:`qrq.appdb.models.ROLES`) are checked here once, for the admin API and
the dashboard alike (:func:`check_role`): an operator reads what an admin reads and
gets 403 on anything else, so an action added later is closed to operators unasked.
"""

from __future__ import annotations

import functools
import hmac
import logging
from collections.abc import Callable

from flask import current_app, g, request

from qrq.appdb import throttle
from qrq.appdb.models import User
from qrq.errors import Forbidden, Unauthorized

logger = logging.getLogger("qrq.web")
MAX_TOKEN = 200
# What an operator may send: reads. Every other method is an action, for admins only.
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_proxy_warned = False  # see count_failure


def bearer_token(hint: str = "send Authorization: Bearer <token>") -> str:
    """The token of this request's ``Authorization: Bearer`` header.

    :raises Unauthorized: (with *hint*) no header, another scheme, or a malformed token.
    """
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > MAX_TOKEN:
        raise Unauthorized(hint)
    return token


def token_user(token: str, *, also_accept: str | None = None) -> User | None:
    """The user of *token*, throttled per client address; None for *also_accept*
    (a non-user token such as ``QRQ_METRICS_TOKEN``) when it matches.

    :raises TooManyAttempts: this address sent too many bad tokens lately.
    :raises Unauthorized: an unknown token (counted against the address).
    """
    if also_accept and hmac.compare_digest(token.encode(), also_accept.encode()):
        throttle.check(request.remote_addr)
        return None
    user = throttle.token_user(request.remote_addr, token)  # the throttle is checked first
    if user is None:
        count_failure()
        raise Unauthorized("invalid API token")
    return user


def count_failure() -> None:
    """Count a bad token or failed log-in against the client's address; say once per
    process when that address is evidently a proxy's that QRQ_TRUSTED_PROXIES omits."""
    throttle.record_failure(request.remote_addr)
    global _proxy_warned
    if not _proxy_warned and "X-Forwarded-For" in request.headers \
            and not current_app.config["QRQ"].trusted_proxies:
        _proxy_warned = True
        logger.warning("requests come through a proxy (X-Forwarded-For) but "
                       "QRQ_TRUSTED_PROXIES is 0: failed log-ins and bad tokens count "
                       "against the proxy's address %s, so a few lock every client out; "
                       "set QRQ_TRUSTED_PROXIES to the number of proxies in front",
                       request.remote_addr)



def current_user() -> User:
    """The user whose token came with this request.

    :raises Unauthorized: no token, a malformed header, or an unknown token.
    """
    if "user" not in g:
        g.user = token_user(bearer_token())
    return g.user


def login_required(view: Callable) -> Callable:
    @functools.wraps(view)
    def wrapped(*args, **kwargs):
        current_user()
        return view(*args, **kwargs)
    return wrapped


def check_role(user: User, method: str) -> None:
    """Let an admin do anything and an operator read (*method* GET, HEAD, OPTIONS).

    :raises Forbidden: a plain user, or an operator sending an action.
    """
    if user.is_admin or (user.is_operator and method in READ_METHODS):
        return
    if user.is_operator:
        raise Forbidden("operators may look but not act: only an admin may do this")
    raise Forbidden("admins only")


def admin_required(view: Callable) -> Callable:
    """For admins; operators too for reads (:func:`check_role`)."""
    @functools.wraps(view)
    def wrapped(*args, **kwargs):
        check_role(current_user(), request.method)
        return view(*args, **kwargs)
    return wrapped
