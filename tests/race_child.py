"""Run in a freshly spawned process (not forked: database pools hold threads and locks)."""

import os


def decide(database_url, request_id, index, barrier, results):
    os.environ["DATABASE_URL"] = database_url
    os.environ["DJANGO_SETTINGS_MODULE"] = "oversight.settings"
    import django

    django.setup()
    from django.db import connections

    from oversight import actions
    from oversight.models import Source, Status

    connections["default"].ensure_connection()
    barrier.wait()
    try:
        actions.do_decide(request_id, outcome=Status.APPROVED, source=Source.OPERATOR, by=f"proc{index}")
        results.put(("won", index))
    except actions.AlreadyDecided as lost:
        results.put(("lost", lost.request.decided_by))
    finally:
        connections.close_all()


def approve(database_url, request_id, who, barrier, results):
    """One operator's approval, at the barrier, in a process of its own."""
    os.environ["DATABASE_URL"] = database_url
    os.environ["DJANGO_SETTINGS_MODULE"] = "oversight.settings"
    import django

    django.setup()
    from django.db import connections

    from oversight import actions
    from oversight.models import Source, Status

    connections["default"].ensure_connection()
    barrier.wait()
    try:
        req = actions.do_decide(request_id, outcome=Status.APPROVED, source=Source.OPERATOR, by=who)
        results.put(("approved" if req.status == Status.APPROVED else "partial", who))
    except actions.AlreadyDecided as lost:
        results.put(("lost", lost.request.decided_by))
    finally:
        connections.close_all()
