"""qrq: zero-infrastructure background jobs for QRCards, on Huey and one SQLite file."""

__version__ = "0.1.0"
