"""Sign-ins: audited (success and failure, with the address) and throttled.

Throttling (contract §9.3): after 5 failed attempts for one username from one
address, or 20 from one address, within 15 minutes, every further attempt from that
address (whatever the username) answers 429 without the password being checked, for
15 minutes counted from the failure that reached the limit. The count is of the audit
trail's `login_failed` rows, in the database: it holds across web nodes, survives a
Redis outage, and cannot be reset by flushing a cache. Counting per username *and*
address means nobody can lock an operator out from another address.
"""

from __future__ import annotations

import math
from datetime import timedelta
from functools import wraps

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.contrib.auth.forms import AuthenticationForm
from django.shortcuts import render
from django.utils import timezone

from oversight import audit

WINDOW = timedelta(minutes=15)
PER_USERNAME_AND_ADDRESS = 5
PER_ADDRESS = 20
THROTTLED_MESSAGE = "Too many failed sign-ins from your address. Wait 15 minutes, then try again."


def _username(value) -> str:
    return str(value or "")[:150]


def blocked_until(address: str, now=None):
    """When the block of `address` ends, or None when it is not blocked.

    A failure that is the 5th of one username, or the 20th of any, from `address`
    within 15 minutes blocks the address for 15 minutes from that failure. Blocked
    attempts are not counted (their password is never checked), so a block is never
    prolonged by knocking on it.
    """
    from oversight.models import AuditEvent

    now = now or timezone.now()
    # A failure that counts towards a block still in force is under two windows old.
    failures = list(
        AuditEvent.objects.filter(
            kind=AuditEvent.Kind.LOGIN_FAILED, at__gt=now - 2 * WINDOW, at__lte=now, data__address=address,
        ).order_by("at", "id").values_list("at", "actor")
    )
    until = None
    for index, (at, actor) in enumerate(failures):
        if at + WINDOW <= now:
            continue  # a block it starts is over already
        recent = [who for when, who in failures[: index + 1] if when > at - WINDOW]
        if len(recent) >= PER_ADDRESS or recent.count(actor) >= PER_USERNAME_AND_ADDRESS:
            until = max(until, at + WINDOW) if until else at + WINDOW
    return until


def throttled(view):
    """Answer a POST from a throttled address with 429 before the view checks any password."""

    @wraps(view)
    def wrapper(request, *args, **kwargs):
        until = blocked_until(audit.remote_address(request)) if request.method == "POST" else None
        if until is not None:
            context = {"form": AuthenticationForm(request), "throttled": THROTTLED_MESSAGE,
                       "next": request.POST.get("next", "")}
            response = render(request, "login.html", context, status=429)
            response["Retry-After"] = str(max(1, math.ceil((until - timezone.now()).total_seconds())))
            return response
        return view(request, *args, **kwargs)

    return wrapper


login = throttled(auth_views.LoginView.as_view(template_name="login.html", redirect_authenticated_user=True))


def admin_login(request, extra_context=None):
    """The admin's own sign-in form, under the same throttle and audit."""
    return throttled(admin.site.login)(request, extra_context)


def on_logged_in(sender, request, user, **kwargs):
    from oversight.models import AuditEvent

    audit.record(AuditEvent.Kind.LOGIN_SUCCEEDED, user.get_username(),
                 address=audit.remote_address(request) if request is not None else "")


def on_login_failed(sender, credentials, request=None, **kwargs):
    from oversight.models import AuditEvent

    audit.record(AuditEvent.Kind.LOGIN_FAILED, _username(credentials.get("username")),
                 address=audit.remote_address(request) if request is not None else "")
