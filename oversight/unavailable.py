"""Pages while the database is unreachable: 503, Retry-After and a short page.

The page is rendered without the request (no session, no user, no context
processors), so showing it never needs the database it is about. The agent API has
its own JSON answer (oversight/api/views.py); /healthz reports the database down.
"""

from __future__ import annotations

import logging

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string
from django.utils.deprecation import MiddlewareMixin

from oversight.api.errors import RETRY_AFTER_SECONDS

log = logging.getLogger(__name__)

# What an unreachable database raises (or the pool when its short wait runs out);
# other database errors are faults of our own and stay 500s.
UNREACHABLE = (OperationalError, InterfaceError)


def unavailable_page() -> HttpResponse:
    response = HttpResponse(render_to_string("unavailable.html"), status=503)
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    response["Cache-Control"] = "no-store"
    return response


class DatabaseUnavailableMiddleware(MiddlewareMixin):
    """A page whose view (or its template) finds the database unreachable answers 503."""

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, UNREACHABLE):
            log.warning("Database unavailable on %s: %s", request.path, exception)
            return unavailable_page()
        return None
