"""The request body limit, kept at the ASGI layer.

Django's handler reads a whole body into a spooled temporary file (memory, then
disk) before any view runs, so a limit checked in a view comes after a 3 GB upload
has been stored. This middleware sits in front: a Content-Length over the limit is
refused before a byte of the body is read, and a body without one (chunked) is
counted as it arrives and refused the moment it crosses the limit. In both cases
the application never sees more than the limit.
"""

from __future__ import annotations

import json

from oversight.api.schemas import MAX_BODY_BYTES

_PAGE = (
    "<!doctype html><html lang=en><meta charset=utf-8><title>Too large</title>"
    "<h1>Too large</h1><p>The request body is over {kib} KiB.</p></html>"
)


class BodyLimitMiddleware:
    def __init__(self, app, limit: int = MAX_BODY_BYTES):
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = _content_length(scope)
        if declared is not None and declared > self.limit:
            return await self._refuse(scope, send)

        received = 0
        refused = False

        async def limited_receive():
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    # Answer now and tell the application the client went away: Django's
                    # handler then drops the request without reading further.
                    refused = True
                    await self._refuse(scope, send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message):
            if not refused:
                await send(message)

        await self.app(scope, limited_receive, guarded_send)

    async def _refuse(self, scope, send) -> None:
        kib = self.limit // 1024
        if scope["path"].startswith("/api/"):
            body = json.dumps(
                {"error": {"code": "payload_too_large", "message": f"The body is over {kib} KiB.", "details": {}}}
            ).encode()
            content_type = b"application/json"
        else:
            body = _PAGE.format(kib=kib).encode()
            content_type = b"text/html; charset=utf-8"
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                # The rest of the body is never read, so the connection cannot be reused.
                "headers": [
                    (b"content-type", content_type),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _content_length(scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server refuses a malformed length itself
    return None
