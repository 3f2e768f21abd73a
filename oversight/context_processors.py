from django.conf import settings

from oversight.roles import is_manager, is_operator


def roles(request):
    user = getattr(request, "user", None)
    if user is None:
        return {}
    return {"is_operator": is_operator(user), "is_manager": is_manager(user)}


def local_logins(request):
    """For the login page: where `make run` keeps the generated passwords (empty in production)."""
    return {"local_logins": settings.LOCAL_LOGINS_HINT}
