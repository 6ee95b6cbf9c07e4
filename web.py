"""Entry point for the web app: ``flask --app web run``, or ``waitress-serve web:app``."""

from qrq.web import create_app

app = create_app()
