"""Audit events that concern no request: keys, logins, alert acknowledgements.

"From where" is the remote address of the page request that caused the event:
`AddressMiddleware` keeps it in a context variable for the request's duration, and
every audit row saved meanwhile (policy edits, key actions in the admin, logins,
acknowledgements, decisions) carries it as `data["address"]`. Rows written by a
command or a worker have none (their actor says `cli` or the task).
"""

from __future__ import annotations

from contextvars import ContextVar

from django.http import HttpRequest

current_address: ContextVar[str | None] = ContextVar("oversight_audit_address", default=None)


def remote_address(request: HttpRequest) -> str:
    """The peer's address as the server saw it (uvicorn resolves trusted proxies' headers)."""
    return request.META.get("REMOTE_ADDR") or ""


class AddressMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        token = current_address.set(remote_address(request))
        try:
            return self.get_response(request)
        finally:
            current_address.reset(token)


def record(kind: str, actor: str, *, address: str | None = None, **data):
    """Write one audit event; `address` defaults to the current page request's."""
    from oversight.models import AuditEvent

    address = address if address is not None else current_address.get()
    if address is not None:
        data = {"address": address} | data
    return AuditEvent.objects.create(kind=kind, actor=actor[:150], data=data)


def key_created(key, *, by: str):
    from oversight.models import AuditEvent

    return record(AuditEvent.Kind.KEY_CREATED, by, agent=key.agent.name, prefix=key.prefix, label=key.label)


def keys_revoked(agent_name: str, prefixes: list[str], *, by: str) -> None:
    from oversight.models import AuditEvent

    for prefix in prefixes:
        record(AuditEvent.Kind.KEY_REVOKED, by, agent=agent_name, prefix=prefix)
