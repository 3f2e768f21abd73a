"""Sign-ins: audited (success and failure, with the address) and throttled.

Throttling (contract §9.3): after 5 failed attempts for one username from one
address, or 20 from one address, within 15 minutes, further attempts (of that
username, or from that address at all) answer 429 without the password being
checked. The count is of the audit trail's `login_failed` rows, in the database:
it holds across web nodes, survives a Redis outage, and cannot be reset by
flushing a cache. Counting per username *and* address means nobody can lock an
operator out from another address.
"""

from __future__ import annotations

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


def is_throttled(username: str, address: str, now=None) -> bool:
    from oversight.models import AuditEvent

    now = now or timezone.now()
    failures = AuditEvent.objects.filter(kind=AuditEvent.Kind.LOGIN_FAILED, at__gt=now - WINDOW, data__address=address)
    if failures.filter(actor=_username(username)).count() >= PER_USERNAME_AND_ADDRESS:
        return True
    return failures.count() >= PER_ADDRESS


def throttled(view):
    """Answer a POST from a throttled address with 429 before the view checks any password."""

    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if request.method == "POST" and is_throttled(request.POST.get("username", ""), audit.remote_address(request)):
            context = {"form": AuthenticationForm(request), "throttled": THROTTLED_MESSAGE,
                       "next": request.POST.get("next", "")}
            return render(request, "login.html", context, status=429)
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
