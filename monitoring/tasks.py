"""Thin Celery tasks over monitoring's testable units.

Collection goes out on a broadcast queue: every worker gets every tick, so every
worker host samples itself (not whichever worker happens to be free), and
`claim_tick` keeps two workers of one host from filing two samples. Each
periodic task expires after one interval: a backlog never replays stale ticks.
"""

from __future__ import annotations

import logging

from celery import shared_task
from celery.schedules import crontab
from kombu import Exchange
from kombu.common import Broadcast

log = logging.getLogger(__name__)

BROADCAST_QUEUE = "monitoring.broadcast"


def broadcast_queue() -> Broadcast:
    return Broadcast(BROADCAST_QUEUE)


def broadcast_options() -> dict:
    """Send options for a broadcast. Celery does not declare a Broadcast's exchange
    when sending, and kombu's Redis transport then takes an undeclared exchange
    for a direct one: the message would sit in a list no worker reads."""
    return {"queue": BROADCAST_QUEUE, "declare": [Exchange(BROADCAST_QUEUE, type="fanout")]}


def schedule(app) -> None:
    """Add monitoring's periodic tasks to the beat (called from oversight.celery)."""
    from django.conf import settings

    every = settings.MONITORING_SAMPLE_SECONDS
    app.add_periodic_task(
        every, app.signature("monitoring.collect", expires=every, **broadcast_options()), name="monitoring collect"
    )
    rollup = settings.MONITORING_ROLLUP_SECONDS
    app.add_periodic_task(rollup, app.signature("monitoring.rollup", expires=rollup), name="monitoring rollup")
    scan = settings.MONITORING_LEAK_SCAN_SECONDS
    app.add_periodic_task(scan, app.signature("monitoring.leak_scan", expires=scan), name="monitoring leak scan")
    app.add_periodic_task(
        crontab(minute=0, hour=6, day_of_week=1),
        app.signature("monitoring.leak_summary", expires=3600),
        name="monitoring weekly leak summary",
    )


@shared_task(bind=True, name="monitoring.collect", ignore_result=True)
def collect(self) -> bool:
    """Sample this worker's host once per broadcast tick."""
    from monitoring.collect import claim_tick, collect_one_sample, this_host

    host = this_host(self.request.hostname)
    if not claim_tick(host, self.request.id or ""):
        return False
    collect_one_sample(host)
    return True


@shared_task(name="monitoring.rollup", ignore_result=True)
def rollup() -> dict:
    from monitoring.retention import roll_up_and_prune

    return roll_up_and_prune()


@shared_task(name="monitoring.leak_scan", ignore_result=True)
def leak_scan() -> int:
    from monitoring.leaks import scan

    return scan()


@shared_task(name="monitoring.leak_summary", ignore_result=True)
def leak_summary() -> bool:
    return handle_weekly_leaks()


def handle_weekly_leaks(now=None) -> bool:
    """Store the week just ended once; mail managers only when this call stored it, so a
    second run (or a second beat) stores and sends nothing."""
    from monitoring.leaks import handle_one_week

    week, created = handle_one_week(now)
    log.info("Leak findings in the week of %s: %s", week.week, week.findings)
    if created:
        send_weekly_leaks(week)
    return created


def weekly_leaks_text(week) -> str:
    from django.conf import settings

    mib = 1 << 20
    return "\n".join([
        f"Leak scan of the week of {week.week} (UTC):",
        "",
        f"Findings: {week.findings}",
        f"Processes: {week.processes}",
        f"Fastest growth: {week.fastest_bytes_per_hour / mib:.1f} MiB/h",
        f"Cleared: {week.cleared}",
        f"Dismissed as false positives: {week.dismissed}",
        "",
        f"Every week: {settings.SITE_URL}/monitoring/leaks/weekly/",
    ])


def send_weekly_leaks(week) -> int:
    """Mail the week to managers; a failing mail server is logged, the week stays stored."""
    from django.core.mail import send_mail
    from django.utils import timezone

    from monitoring.models import LeakWeek
    from oversight.reviews.tasks import manager_emails

    recipients = manager_emails()
    if not recipients:
        return 0
    try:
        sent = send_mail(f"Oversight leak scan, week of {week.week}", weekly_leaks_text(week), None, recipients)
    except Exception:  # the stored week is what matters
        log.exception("Could not mail the leak scan of the week of %s", week.week)
        return 0
    LeakWeek.objects.filter(pk=week.pk).update(mailed_at=timezone.now())
    return sent
