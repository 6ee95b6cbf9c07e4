"""qrq's settings: declared once, read from ``QRQ_*`` environment variables, checked.

The web app, the consumer and the CLI all call :func:`load_settings`, which refuses
a value outside what its setting allows (naming the variable and the allowed
values) and makes every file the process creates private to its owner.

``row`` says what one setting is, ``settings`` declares the table, ``load`` reads
and checks it (and holds the generated secret), ``files`` keeps the data
directory private.
"""

from qrq.config.files import PRIVATE_UMASK, holds_qrq_data, make_private
from qrq.config.load import load_settings, read_or_create_secret, settings_or_exit
from qrq.config.row import Setting, SettingsError, setting
from qrq.config.settings import SETTINGS, SETTINGS_BY_NAME, Settings, check_secret

__all__ = [
    "PRIVATE_UMASK", "SETTINGS", "SETTINGS_BY_NAME", "Setting", "Settings", "SettingsError",
    "check_secret", "holds_qrq_data", "load_settings", "make_private", "read_or_create_secret",
    "setting", "settings_or_exit",
]
