"""People's roles are Django groups: operators decide, managers review and edit policies."""

from __future__ import annotations

from functools import wraps

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied

OPERATORS = "operators"
MANAGERS = "managers"
ROLES = {"operator": OPERATORS, "manager": MANAGERS}


def has_role(user, *groups: str) -> bool:
    if not user.is_authenticated or not user.is_active:
        return False
    if user.is_superuser:
        return True
    names = getattr(user, "_oversight_groups", None)
    if names is None:
        names = set(user.groups.values_list("name", flat=True))
        user._oversight_groups = names
    return any(group in names for group in groups)


def is_operator(user) -> bool:
    return has_role(user, OPERATORS)


def is_manager(user) -> bool:
    return has_role(user, MANAGERS)


def role_required(*groups: str):
    """A view for people in any of `groups` (superusers always): login first, else 403."""

    def decorator(view):
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            if not has_role(request.user, *groups):
                raise PermissionDenied("Your role does not give access to this page.")
            return view(request, *args, **kwargs)

        return wrapper

    return decorator
