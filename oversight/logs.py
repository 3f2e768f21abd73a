"""Log filters: an expected client error (a 4xx) is one line, not a traceback."""

from __future__ import annotations

import logging


class OneLineClientErrors(logging.Filter):
    """Drops the traceback from records about responses below 500.

    Django logs a refused page (PermissionDenied: 403), a bad request or a
    disallowed host with the exception attached; for these ordinary answers the
    status line says everything. Server errors keep their traceback.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        status = getattr(record, "status_code", None)
        if isinstance(status, int) and status < 500 and record.exc_info:
            exc = record.exc_info[1]
            record.exc_info = None
            record.exc_text = None
            if exc is not None and str(exc) and str(exc) not in record.getMessage():
                record.msg = f"{record.getMessage()} ({type(exc).__name__}: {exc})"
                record.args = ()
        return True
