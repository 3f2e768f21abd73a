"""The ASGI application: HTTP (pages, the agent API) and websockets from one server.

HTTP is split in two Django handlers. Pages go through the full middleware stack
(sessions, CSRF, auth). The agent API, /healthz and /metrics go through a lean
handler with API_MIDDLEWARE: they use no cookies, and under ASGI each synchronous
middleware costs a thread hop on every request.
"""

from __future__ import annotations

import asyncio
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "oversight.settings")

from django.core.asgi import get_asgi_application

pages_app = get_asgi_application()  # sets Django up; imports below need it

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core import signals  # noqa: E402
from django.core.exceptions import RequestAborted  # noqa: E402
from django.core.handlers.asgi import ASGIHandler, get_script_prefix  # noqa: E402
from django.urls import path, set_script_prefix  # noqa: E402

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


class AgentAPIHandler(LeanASGIHandler):
    """The lean handler without the thread hops Django's own handler makes around a view.

    Django's ASGIHandler sends `request_started` and closes the response (which sends
    `request_finished`) each through a thread-sensitive hop, in a per-request
    thread-sensitive context that starts a thread of its own: two hops and a thread per
    request, for receivers that close the database connections of a thread the agent
    API never uses. Its views are async and make one hop of their own for all of their
    database work (`oversight.api.views._in_thread`), which takes a healthy connection
    and gives it back; so here the receivers run in place (cheap: this thread has no
    database connection), and the rest is Django's handling unchanged: the body read
    and its limit, the request, the disconnect watch, the response, the closers.
    """

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        await self.handle(scope, receive, send)

    async def handle(self, scope, receive, send):
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        set_script_prefix(get_script_prefix(scope))
        signals.request_started.send(sender=self.__class__, scope=scope)
        request, error_response = self.create_request(scope, body_file)
        if request is None:
            body_file.close()
            await self.send_response(error_response, send)
            error_response.close()
            return

        async def process_request(request, send):
            response = await self.run_get_response(request)
            try:
                await self.send_response(response, send)
            except asyncio.CancelledError:
                pass  # the client went away during the send
            return response

        # As Django: watch for a disconnect while the view runs (a long-poll is cancelled).
        tasks = [
            asyncio.create_task(self.listen_for_disconnect(receive)),
            asyncio.create_task(process_request(request, send)),
        ]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            if task.done():
                try:
                    task.result()
                except RequestAborted:
                    pass
                except AssertionError:
                    body_file.close()
                    raise
            else:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        try:
            response = tasks[1].result()
        except asyncio.CancelledError:
            signals.request_finished.send(sender=self.__class__)
        else:
            response.close()  # its closers, then request_finished
        body_file.close()


api_app = AgentAPIHandler()
lean_app = LeanASGIHandler()
LEAN_PREFIXES = ("/healthz", "/metrics")
# bench/api.py's reference: the bare insert on the lean Django handler, as the agent API
# was served before AgentAPIHandler (only routed with OVERSIGHT_BENCH=1).
DJANGO_HANDLER_PATHS = ("/api/bench/insert-django",) if settings.OVERSIGHT_BENCH else ()


async def http_app(scope, receive, send):
    path = scope["path"]
    if path.startswith("/api/") and path not in DJANGO_HANDLER_PATHS:
        app = api_app
    elif path.startswith(LEAN_PREFIXES) or path in DJANGO_HANDLER_PATHS:
        app = lean_app
    else:
        app = pages_app
    await app(scope, receive, send)


application = ProtocolTypeRouter(
    {
        # In front of both handlers: a body over the limit is refused before it is read.
        "http": BodyLimitMiddleware(http_app),
        "websocket": SameOriginValidator(AuthMiddlewareStack(URLRouter([path("ws/feed/", FeedConsumer.as_asgi())]))),
    }
)
