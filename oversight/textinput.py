"""No NUL character in what a person's browser sends.

PostgreSQL stores no NUL (\\x00) in text or jsonb, so a form field or query parameter
holding one — a decision's reason or note, a policy field, a history filter — would end
in a database error (a 500) wherever it is stored or compared. SQLite would store it,
and a reason that looks empty on the page is no better. This middleware refuses any
such request before a view runs: a 400 `validation_error` naming the field (JSON for a
caller that accepts it, else the error page). The agent API checks its own input (a
NUL in a JSON body or a query parameter is a 400 there).
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from oversight.api.errors import error_response

WHY = "contains a NUL character (\\x00), which no text field can hold"


class RefuseNulMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        field = None if request.path.startswith("/api/") else nul_field(request)
        if field is None:
            return self.get_response(request)
        message = f"The field {field} {WHY}."
        if "application/json" in request.headers.get("Accept", ""):
            return error_response(400, "validation_error", message, {field: [WHY]})
        return render(request, "error.html", {"title": "Bad request", "message": message}, status=400)


def nul_field(request: HttpRequest) -> str | None:
    """The first field (or `path`) of the request that holds a NUL, else None."""
    if "\x00" in request.path:
        return "path"
    sources = [request.GET]
    if request.method == "POST" and request.content_type in (
        "application/x-www-form-urlencoded", "multipart/form-data"
    ):
        sources.append(request.POST)
    for data in sources:
        for name, values in data.lists():
            if "\x00" in name or any("\x00" in value for value in values):
                return name.replace("\x00", "\\x00")
    return None
