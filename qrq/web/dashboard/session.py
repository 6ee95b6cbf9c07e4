"""Dashboard log-in, sessions and CSRF.

Admins and operators log in with their user name and API token (no passwords to store, reset
or leak: the token is already a 256-bit secret kept only as a hash, and
``qrq users reset-token`` ends every session made with the old one). The
session lives in the app database (:mod:`qrq.appdb.sessions`); the cookie holds
only its random key and the CSRF token. Every POST carries the session's CSRF
token; actions (retry, cancel, purge, logout) answer POST only, and only to an
admin: an operator sees every page and gets 403 for every action
(:func:`qrq.web.auth.check_role`), with the buttons hidden. Failed log-ins are
throttled per client address; log-ins (failed ones too) and log-outs are in the audit log.
"""

from __future__ import annotations

import functools
import hmac
import re
import secrets
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from flask import flash, g, redirect, render_template, request, session, url_for

from qrq.appdb import sessions, throttle
from qrq.appdb.models import User
from qrq.errors import Forbidden, Unauthorized
from qrq.queue import audit, huey
from qrq.web.auth import MAX_TOKEN, check_role, count_failure
from qrq.web.dashboard.blueprint import bp

SESSION_HOURS = 8


def session_admin() -> User | None:
    """The admin or operator logged in to this session, or None.

    The cookie holds only a random session key; the app database says whose it is
    (:mod:`qrq.appdb.sessions`), so a reset token, a lost role, a log-out or an old
    log-in ends it on every web host.
    """
    if "admin" not in g:
        g.admin = sessions.session_user(session.get("sid"))
    return g.admin


def csrf_token() -> str:
    """This session's CSRF token, created on first use."""
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return session["csrf"]


@bp.before_request
def _check_csrf() -> None:
    if request.method == "POST":
        # Besides the token: a browser that says the form came from another site (its
        # fetch metadata; curl and old browsers send none) is refused whatever it sends.
        if request.headers.get("Sec-Fetch-Site") in ("cross-site", "same-site"):
            raise Forbidden("the form came from another site")
        sent = request.form.get("csrf_token", "") or request.headers.get("X-CSRF-Token", "")
        expected = session.get("csrf", "")
        if not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
            raise Forbidden("the form expired or did not come from this site; reload the "
                            "page and try again")


def admin_page(view: Callable) -> Callable:
    """Only for a logged-in admin, or an operator reading: without a session pages
    redirect to the login and the rest answer 401; an operator's action answers 403."""
    @functools.wraps(view)
    def wrapped(*args, **kwargs):
        user = session_admin()
        if user is None:
            if request.method == "GET" and not request.path.endswith(".json"):
                return redirect(url_for("admin.login", next=request.full_path.rstrip("?")))
            raise Unauthorized("log in to the dashboard first")
        check_role(user, request.method)
        return view(*args, user=user, **kwargs)
    return wrapped


def may_act() -> bool:
    """Whether this session's user may use the action buttons (an admin), for the
    templates, which hide them from operators."""
    user = session_admin()
    return user is not None and user.is_admin


def safe_next(target: str | None) -> str:
    """*target* if it is a path inside the dashboard, else the overview's."""
    return target if _inside_dashboard(target) else url_for("admin.overview")


def _inside_dashboard(target: str | None) -> bool:
    # Printable ASCII only: a CR or LF in a Location header is a 500 (or a header
    # injected), and browsers drop tabs and newlines from a URL, so "/\t/host" is "//host".
    if not target or not all("!" <= ch <= "~" for ch in target):
        return False
    # Browsers read "\\" as "/" and "%2e%2e" as "..", so the path is checked decoded:
    # no "//" (another host), no "." or ".." segment (out of /admin/).
    path = unquote(re.split(r"[?#]", target, maxsplit=1)[0])
    segments = path.split("/")
    return (segments[:2] == ["", "admin"] and "\\" not in target and "\\" not in path
            and "//" not in path and not {".", ".."} & set(segments))


@bp.context_processor
def _csrf_global() -> dict[str, Any]:
    return {"csrf_token": csrf_token, "may_act": may_act()}


@bp.get("/login")
def login():
    if session_admin() is not None:
        return redirect(safe_next(request.args.get("next")))
    return render_template("admin/login.html", user=None, alerts=[],
                           next=safe_next(request.args.get("next")), error=None)


@bp.post("/login")
def login_post():
    name = request.form.get("name", "").strip()[:64]
    token = request.form.get("token", "").strip()
    target = safe_next(request.form.get("next"))
    throttle.check(request.remote_addr)
    user = User.from_token(token) if token and len(token) <= MAX_TOKEN else None
    # One message for every failure, so the form tells nothing about which part was wrong.
    if user is None or not hmac.compare_digest(user.name.encode(), name.encode()) \
            or not user.is_staff:
        count_failure()
        audit.record(huey.storage, "-", "session.login_failed",
                     detail={"address": request.remote_addr, "name": name})
        return render_template("admin/login.html", user=None, alerts=[], next=target,
                               error="Wrong name or token, or not an admin."), 403
    sessions.end_session(session.get("sid"))
    session.clear()
    session.permanent = True
    session.update(sid=sessions.open_session(user, SESSION_HOURS * 3600),
                   csrf=secrets.token_urlsafe(32))
    audit.record(huey.storage, user.name, "session.login",
                 detail={"address": request.remote_addr})
    return redirect(target)


@bp.post("/logout")
def logout():
    user = session_admin()
    if user is not None:
        audit.record(huey.storage, user.name, "session.logout",
                     detail={"address": request.remote_addr})
    sessions.end_session(session.get("sid"))
    session.clear()
    flash("Logged out.")
    return redirect(url_for("admin.login"))
