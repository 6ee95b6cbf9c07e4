"""App models: users with API tokens, card templates, dashboard sessions and the
per-address throttle of failed log-ins."""

from __future__ import annotations

import datetime
import functools
import hashlib
import json
import secrets

from peewee import (
    AutoField,
    BooleanField,
    CharField,
    DateTimeField,
    DoubleField,
    IntegerField,
    Model,
    TextField,
)

from qrq.appdb.database import app_db
from qrq.errors import Conflict, NotFound, ValidationError


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(tzinfo=None)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# DoubleField, never FloatField: the same REAL on SQLite, but FloatField is a 4-byte
# float on PostgreSQL (a timestamp would come back ~30 s off).
class BaseModel(Model):
    class Meta:
        database = app_db

    @classmethod
    def first_by(cls, column: str, value):
        """The row whose *column* equals *value*, or None.

        Like ``get_or_none(field == value)``, but peewee builds the SQL once per model
        and column: the token check and the template lookup run on every request,
        and building the query cost three times what running it does.
        """
        return next(iter(cls.raw(_select_by(cls, column, app_db.param), value)), None)


@functools.cache
def _select_by(model: type[BaseModel], column: str, param: str) -> str:
    # *param*: the SQL differs in its placeholder between SQLite and PostgreSQL.
    sql, _ = model.select().where(getattr(model, column) == 0).sql()
    return sql


class User(BaseModel):
    id = AutoField()
    name = CharField(unique=True, max_length=64)
    email = CharField(null=True, max_length=254)
    is_admin = BooleanField(default=False)
    # Only a hash of the token is stored; the token itself is shown once.
    token_hash = CharField(unique=True, max_length=64)
    created_at = DateTimeField(default=_utcnow)

    @classmethod
    def create_with_token(cls, name: str, *, admin: bool = False,
                          email: str | None = None) -> tuple[User, str]:
        """Create a user and return it with its new API token."""
        name = name.strip()
        if not name or len(name) > 64:
            raise ValidationError("name must be 1 to 64 characters", field="name")
        if email is not None and ("@" not in email or len(email) > 254):
            raise ValidationError("not an e-mail address", field="email")
        if cls.select().where(cls.name == name).exists():
            raise Conflict(f"user {name!r} already exists", field="name")
        token = "qrq_" + secrets.token_urlsafe(32)
        user = cls.create(name=name, email=email, is_admin=admin,
                          token_hash=hash_token(token))
        return user, token

    def reset_token(self) -> str:
        """Replace this user's token; return the new one (the old stops working)."""
        token = "qrq_" + secrets.token_urlsafe(32)
        self.token_hash = hash_token(token)
        self.save()
        return token

    @classmethod
    def from_token(cls, token: str) -> User | None:
        return cls.first_by("token_hash", hash_token(token))

    def to_dict(self) -> dict:
        return {"id": self.id, "name": self.name, "email": self.email,
                "is_admin": self.is_admin, "created_at": self.created_at.isoformat() + "Z"}


class Template(BaseModel):
    """A card layout: what the QR code encodes and how cards sit on a page."""

    id = AutoField()
    name = CharField(max_length=100)
    domain = CharField(max_length=253)
    # The QR payload, a pattern such as "https://{domain}/c/{template_id}/{copy}".
    payload = TextField()
    title = CharField(max_length=200, default="")
    lines_json = TextField(default="[]")
    page_size = CharField(max_length=32, default="A4")  # A4, Letter or WxH in mm
    grid = CharField(max_length=8, default="1x1")  # columns x rows of cards per page
    qr_size_mm = DoubleField(default=60.0)
    # QR position inside a card, from its bottom-left corner; null centres it.
    qr_x_mm = DoubleField(null=True)
    qr_y_mm = DoubleField(null=True)
    fg_color = CharField(max_length=7, default="#000000")
    bg_color = CharField(max_length=7, default="#ffffff")
    error_correction = CharField(max_length=1, default="M")
    quiet_zone = IntegerField(default=4)
    created_at = DateTimeField(default=_utcnow)

    @property
    def lines(self) -> list[str]:
        return json.loads(self.lines_json)

    @classmethod
    def get_by_id_or_404(cls, template_id: int) -> Template:
        template = cls.first_by("id", template_id)
        if template is None:
            raise NotFound(f"template {template_id} does not exist", field="template_id")
        return template

    def to_dict(self) -> dict:
        return {
            "id": self.id, "name": self.name, "domain": self.domain,
            "payload": self.payload, "title": self.title, "lines": self.lines,
            "page_size": self.page_size, "grid": self.grid,
            "qr_size_mm": self.qr_size_mm, "qr_x_mm": self.qr_x_mm, "qr_y_mm": self.qr_y_mm,
            "colors": {"fg": self.fg_color, "bg": self.bg_color},
            "error_correction": self.error_correction, "quiet_zone": self.quiet_zone,
        }


class AdminSession(BaseModel):
    """A dashboard log-in, kept here so logging out ends it on every web host at once.

    The cookie carries only a random key; the row keeps its hash, so a copy of the
    database (or of a backup) holds no usable session.
    """

    key_hash = CharField(primary_key=True, max_length=64)
    user_id = IntegerField(index=True)
    # The user's token hash at log-in: a reset token ends every session made with the old.
    token_hash = CharField(max_length=64)
    created_at = DoubleField()
    expires_at = DoubleField(index=True)


class Throttle(BaseModel):
    """Failed log-ins and bad API tokens per client address, shared by every web worker."""

    address = CharField(primary_key=True, max_length=64)
    failures = IntegerField(default=0)
    window_start = DoubleField()
    blocked_until = DoubleField(default=0.0)


MODELS = (User, Template, AdminSession, Throttle)
