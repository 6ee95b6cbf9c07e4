"""The Flask app: a JSON API over the job records and the queue."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, request
from peewee import DatabaseError
from werkzeug.middleware.proxy_fix import ProxyFix

from qrq import pg_errors
from qrq.appdb.db import AppDatabaseLost, app_db, open_app_db
from qrq.appdb.migrations import SchemaTooNew
from qrq.artifacts import identity
from qrq.config import settings_or_exit
from qrq.errors import Unavailable

logger = logging.getLogger("qrq.web")


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the app; *test_config* may hold ``SETTINGS`` (a Settings) and Flask keys."""
    from qrq.queue import huey, jobs
    from qrq.web import (
        admin_api,
        api,
        backups_api,
        dashboard,
        errors,
        events,
        home,
        openapi,
        ops,
        params,
        waiting,
        webhooks,
    )
    from qrq.web import analytics as analytics_api
    from qrq.web import batch as batch_api

    test_config = dict(test_config or {})
    settings = test_config.pop("SETTINGS", None) or settings_or_exit()
    settings.ensure_dirs()
    huey.init_or_exit(settings)  # the queue: a database it cannot open is one line
    identity.warn_if_not_shared(huey.storage, settings)  # one store for every host?
    try:
        open_app_db(settings, ran_before=lambda: jobs.any_jobs(huey.storage))
    except (SchemaTooNew, AppDatabaseLost) as exc:
        raise SystemExit(f"Error: {exc}") from None
    except DatabaseError as exc:
        _exit_for_database(exc, settings)
        # Start anyway: /healthz then says app_db fails, and the rest answer 503.
        problem = pg_errors.describe(exc, settings.database_url)
        if problem is not None:
            logger.error("%s; requests answer 503 until it does", problem)
        else:
            logger.exception("the app database %s cannot be opened", settings.app_db)

    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=settings.secret_key,
        MAX_CONTENT_LENGTH=settings.max_request_bytes,
        QRQ=settings,
        # The dashboard's session cookie (a session key and the CSRF token): signed with
        # the qrq secret, never read by scripts, sent only to /admin, not on cross-site
        # POSTs; Secure behind TLS.
        SESSION_COOKIE_NAME="qrq_session",
        SESSION_COOKIE_PATH="/admin",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.secure_cookies,
        PERMANENT_SESSION_LIFETIME=dashboard.SESSION_HOURS * 3600,
    )
    app.config.update(test_config)
    if settings.trusted_proxies:
        # The client's address, scheme and host as the outermost trusted proxy saw them.
        hops = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops,
                                x_prefix=hops)
    app.json.sort_keys = False
    app.extensions["qrq_waiters"] = waiting.WaiterSlots(settings.max_waiters)

    @app.before_request
    def _connect() -> None:
        if request.endpoint == "ops.healthz":
            return  # it probes the databases itself, and must answer when one fails
        try:
            app_db.connect(reuse_if_open=True)
        except DatabaseError as exc:
            problem = pg_errors.describe(exc, settings.database_url)
            if problem is not None:  # one line per failed request, not a traceback
                logger.error("%s", problem)
            else:
                logger.exception("the app database cannot be opened")
            raise Unavailable("the app database is unavailable; try again later") from None

    @app.after_request
    def _nosniff(response):
        # Every answer is read as the type it says: never a JSON error that echoes input
        # sniffed as HTML.
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    @app.teardown_request
    def _close(exc: BaseException | None) -> None:
        if not app_db.is_closed():
            app_db.close()

    errors.init_app(app)
    params.init_app(app)  # the int converter, before any route uses it
    app.register_blueprint(api.bp)
    app.register_blueprint(events.bp)
    app.register_blueprint(webhooks.bp)
    app.register_blueprint(batch_api.bp)
    app.register_blueprint(admin_api.bp)
    app.register_blueprint(backups_api.bp)
    app.register_blueprint(dashboard.bp)
    app.register_blueprint(ops.bp)
    app.register_blueprint(openapi.bp)
    app.register_blueprint(analytics_api.bp)
    app.register_blueprint(home.bp)
    return app


def _exit_for_database(exc: BaseException, settings) -> None:
    """End the starting process with one line when *exc* is an app database problem
    that will not pass by itself (a wrong URL, a missing database, a refused login or
    privilege); else return."""
    problem = pg_errors.describe(exc, settings.database_url)
    if problem is not None and problem.lasting:
        raise SystemExit(f"Error: {problem}") from None
