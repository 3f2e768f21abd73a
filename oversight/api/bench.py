"""A bare endpoint for bench/api.py: insert one row, nothing else.

Served only when OVERSIGHT_BENCH=1, through the same lean handler and the same
single thread hop as the API (`_in_thread`), so the benchmark's ratio measures what
the API itself adds (auth, validation, policy, audit, events). /api/bench/insert-django is
the same insert served by Django's own (lean) ASGI handler, as the API was before
oversight.asgi.AgentAPIHandler: the reference for what that handler saves.
"""

from __future__ import annotations

from django.http import JsonResponse

from oversight.api.views import _in_thread
from oversight.models import AuditEvent


def _insert() -> int:
    return AuditEvent.objects.create(kind="bench", actor="bench").pk


async def insert_one(request):
    return JsonResponse({"id": await _in_thread(_insert)}, status=201)
