"""The Celery app: workers apply timeouts, deliver callbacks and collect memory samples."""

from __future__ import annotations

import os

from celery import Celery, signals
from kombu import Queue
from kombu.common import Broadcast

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "oversight.settings")

app = Celery("oversight")
app.config_from_object("django.conf:settings", namespace="CELERY")
# The default queue, and the broadcast every worker consumes (per-host memory collection).
# Deliveries (callbacks, notifications) have their own queue, so a slow receiver never
# holds up timeouts and sweeps.
app.conf.task_queues = (Queue("celery"), Queue("deliveries"), Broadcast("monitoring.broadcast"))
app.conf.task_routes = {
    "oversight.deliver": {"queue": "deliveries"},
    "oversight.deliveries_sweep": {"queue": "deliveries"},
}
app.autodiscover_tasks(["oversight", "monitoring"])


@app.on_after_finalize.connect
def _schedule(sender, **kwargs) -> None:
    from django.conf import settings

    # Beat fires these; every worker may run them: claims are conditional UPDATEs.
    # Each expires after one interval so a backlog never replays stale sweeps.
    sweep = settings.OVERSIGHT_SWEEP_SECONDS
    # Beat's own deadline loop applies each timeout when it falls due, from the
    # database alone (so they hold with Redis down); the sweep through the broker is
    # the backstop should that loop be gone. Both claim rows by one conditional UPDATE
    # on the database's clock: each timeout once.
    deadlines = sweep
    sender.add_periodic_task(
        deadlines, sender.signature("oversight.sweep", expires=deadlines), name="oversight sweep"
    )
    sender.add_periodic_task(
        sweep, sender.signature("oversight.deliveries_sweep", expires=sweep), name="oversight deliveries sweep"
    )

    from monitoring.tasks import schedule as monitoring_schedule

    monitoring_schedule(sender)

    from oversight.reviews.tasks import schedule as reports_schedule

    reports_schedule(sender)


@app.task(name="oversight.ping", ignore_result=False)
def ping() -> str:
    """A trivial task: proves a worker is listening (used by checks and tests)."""
    return "pong"


@signals.beat_init.connect
def _start_deadline_loop(sender=None, **kwargs) -> None:
    """Beat also runs the deadline loop: each timeout applied when due, even with Redis down."""
    from django.conf import settings

    if settings.OVERSIGHT_DEADLINE_LOOP:
        from oversight import deadlines

        deadlines.start(settings.OVERSIGHT_DEADLINE_POLL_SECONDS, settings.OVERSIGHT_DEADLINE_IDLE_SECONDS)
