"""A bare endpoint for bench/api.py: insert one row, nothing else.

Served only when OVERSIGHT_BENCH=1, through the same lean handler and the same
single thread hop as the API, so the benchmark's ratio measures what the API
itself adds (auth, validation, policy, audit, events).
"""

from __future__ import annotations

from asgiref.sync import sync_to_async
from django.db import close_old_connections
from django.http import JsonResponse

from oversight.models import AuditEvent


def _insert() -> int:
    close_old_connections()
    try:
        return AuditEvent.objects.create(kind="bench", actor="bench").pk
    finally:
        close_old_connections()


async def insert_one(request):
    pk = await sync_to_async(_insert, thread_sensitive=False)()
    return JsonResponse({"id": pk}, status=201)
