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


def sweep(database_url, barrier, results):
    """Apply due timeouts until none is left, at the barrier; reports the ids this process won."""
    os.environ["DATABASE_URL"] = database_url
    os.environ["DJANGO_SETTINGS_MODULE"] = "oversight.settings"
    import django

    django.setup()
    from django.db import connections

    from oversight import actions

    connections["default"].ensure_connection()
    barrier.wait()
    won = []
    try:
        while True:
            batch = actions.claim_timeouts(limit=50)
            if not batch:
                break
            won.extend(str(req.id) for req in batch)
        results.put(("won", won))
    except Exception as error:  # reported to the test, which fails on it
        results.put(("error", repr(error)))
    finally:
        connections.close_all()
