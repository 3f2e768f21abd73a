from oversight.roles import is_manager, is_operator


def roles(request):
    user = getattr(request, "user", None)
    if user is None:
        return {}
    return {"is_operator": is_operator(user), "is_manager": is_manager(user)}
