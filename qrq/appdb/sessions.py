"""Dashboard sessions, kept in the app database.

The signed cookie holds a random session key and nothing else about the user, so
knowing a user's token hash (and even the app secret) forges nothing; the row
holds the key's hash, the user and the token hash at log-in. Ending a session
deletes its row, so a copied cookie stops working at once, on every web host.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

from qrq.appdb.models import AdminSession, User


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def open_session(user: User, lifetime: float, now: float | None = None) -> str:
    """Record a log-in of *user* for *lifetime* seconds; return the key for the cookie."""
    now = time.time() if now is None else now
    # Expired rows leave on each log-in, so the table holds only live sessions.
    AdminSession.delete().where(AdminSession.expires_at < now).execute()
    key = secrets.token_urlsafe(32)
    AdminSession.create(key_hash=_hash(key), user_id=user.id, token_hash=user.token_hash,
                        created_at=now, expires_at=now + lifetime)
    return key


def session_user(key: object, now: float | None = None) -> User | None:
    """The admin or operator whose live session *key* is, or None (unknown, expired,
    logged out, the token reset since, or neither an admin nor an operator any more)."""
    if not isinstance(key, str) or not 20 <= len(key) <= 100:
        return None
    now = time.time() if now is None else now
    row = AdminSession.first_by("key_hash", _hash(key))
    if row is None or row.expires_at < now:
        return None
    user = User.first_by("id", row.user_id)
    if user is None or not user.is_staff \
            or not hmac.compare_digest(user.token_hash, row.token_hash):
        # Ended for good: a role given back later does not revive the old cookie.
        AdminSession.delete().where(AdminSession.key_hash == row.key_hash).execute()
        return None
    return user


def end_session(key: object) -> None:
    """Forget the session *key* (log-out); an unknown key is ignored."""
    if isinstance(key, str):
        AdminSession.delete().where(AdminSession.key_hash == _hash(key)).execute()
