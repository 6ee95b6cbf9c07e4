"""``/``: where to go from the web app's root, for a person (a small page) or a script
(JSON links)."""

from __future__ import annotations

from flask import Blueprint, jsonify, request

bp = Blueprint("home", __name__)

LINKS = {"dashboard": "/admin", "api_docs": "/api/openapi.json", "health": "/healthz"}

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>qrq</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:36rem;margin:3rem auto;padding:0 1rem}
code{background:#f3f3f3;padding:0 .2em}</style></head>
<body><h1>qrq</h1>
<p>Background jobs for QRCards.</p>
<ul>
<li><a href="/admin">Dashboard</a>: log in with an admin's user name and API token
(<code>qrq users create NAME --admin</code> prints one; under <code>qrq dev</code> the
<code>demo</code> user is an admin).</li>
<li><a href="/api/openapi.json">API reference</a> (OpenAPI 3.1); every call needs
<code>Authorization: Bearer &lt;token&gt;</code>. The README has examples.</li>
<li><a href="/healthz">Health check</a></li>
</ul></body></html>
"""


@bp.get("/")
def index():
    """A page linking the dashboard and the API docs; JSON links for a JSON client."""
    if request.accept_mimetypes.best_match(["text/html", "application/json"]) \
            == "application/json":
        return jsonify(LINKS)
    return PAGE, 200, {"Content-Type": "text/html; charset=utf-8"}
