"""The ASGI application: HTTP (pages, the agent API) and websockets from one server.

HTTP is split in two Django handlers. Pages go through the full middleware stack
(sessions, CSRF, auth). The agent API, /healthz and /metrics go through a lean
handler with API_MIDDLEWARE: they use no cookies, and under ASGI each synchronous
middleware costs a thread hop on every request.
"""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "oversight.settings")

from django.core.asgi import get_asgi_application

pages_app = get_asgi_application()  # sets Django up; imports below need it

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.handlers.asgi import ASGIHandler  # noqa: E402
from django.urls import path  # noqa: E402

from oversight.bodylimit import BodyLimitMiddleware  # noqa: E402
from oversight.consumers import FeedConsumer, SameOriginValidator  # noqa: E402


class LeanASGIHandler(ASGIHandler):
    """Django's handler with settings.API_MIDDLEWARE in place of settings.MIDDLEWARE."""

    def load_middleware(self, is_async=False):
        # load_middleware reads settings.MIDDLEWARE; swap it for the duration of the
        # call. This runs once, at import, before any request is served.
        full = settings.MIDDLEWARE
        settings.MIDDLEWARE = settings.API_MIDDLEWARE
        try:
            super().load_middleware(is_async=is_async)
        finally:
            settings.MIDDLEWARE = full


api_app = LeanASGIHandler()
LEAN_PREFIXES = ("/api/", "/healthz", "/metrics")


async def http_app(scope, receive, send):
    app = api_app if scope["path"].startswith(LEAN_PREFIXES) else pages_app
    await app(scope, receive, send)


application = ProtocolTypeRouter(
    {
        # In front of both handlers: a body over the limit is refused before it is read.
        "http": BodyLimitMiddleware(http_app),
        "websocket": SameOriginValidator(AuthMiddlewareStack(URLRouter([path("ws/feed/", FeedConsumer.as_asgi())]))),
    }
)
