"""Logging filters, importable while settings load (no models here)."""

from __future__ import annotations

import logging
import re

TOKEN_IN_PATH = re.compile(r"/d/[^/\s]+/")


class RedactLinkTokens(logging.Filter):
    """Log `/d/…/` instead of a decision link's token: Django logs the path of every 4xx."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and "/d/" in record.msg:
            record.msg = TOKEN_IN_PATH.sub("/d/…/", record.msg)
        if record.args and isinstance(record.args, tuple):
            record.args = tuple(TOKEN_IN_PATH.sub("/d/…/", a) if isinstance(a, str) else a for a in record.args)
        return True
