"""The monthly snapshot: on the 1st, store the month just ended and email managers.

Stored once, the review of a finished month no longer changes when old rows are
fixed, and loads without recomputing. Beat runs this exactly once; the unique
month on MonthlyReview makes a second run (or a second beat) a no-op that sends
nothing.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from celery import shared_task
from celery.schedules import crontab
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.db.models import Q
from django.utils import timezone

from oversight.models import MonthlyReview
from oversight.reviews import reports
from oversight.roles import MANAGERS

log = logging.getLogger(__name__)


def schedule(sender) -> None:
    """Register with beat: five past midnight UTC on the 1st of every month."""
    sender.add_periodic_task(
        crontab(minute=5, hour=0, day_of_month=1), sender.signature("oversight.monthly_review"), name="monthly review"
    )


@shared_task(name="oversight.monthly_review", ignore_result=True)
def monthly_review() -> bool:
    return handle_monthly_review()


def handle_monthly_review(now: datetime | None = None) -> bool:
    """Store the previous month's review; email managers if this call stored it."""
    now = now or timezone.now()
    this_month = now.astimezone(UTC).date().replace(day=1)
    review, created = reports.store_snapshot(reports.previous_month(this_month), now=now)
    if created:
        send_summary(review)
    return created


def manager_emails() -> list[str]:
    people = get_user_model().objects.filter(is_active=True).exclude(email="")
    people = people.filter(Q(groups__name=MANAGERS) | Q(is_superuser=True)).distinct()
    return sorted(people.values_list("email", flat=True))


def summary_text(review: MonthlyReview) -> str:
    data = reports.review(reports.parse_month(review.month))
    lines = [f"The oversight review of {review.month} is stored.", ""]
    for card in reports.cards(data):
        change = f"  ({card['change']} vs {card['previous']})" if card["change"] else ""
        lines.append(f"{card['label']}: {card['value']}{change}")
    lines += ["", f"Charts, tables and threshold advice: {settings.SITE_URL}/reports/{review.month}/",
              f"CSV: {settings.SITE_URL}/reports/{review.month}.csv"]
    return "\n".join(lines)


def send_summary(review: MonthlyReview) -> int:
    """Email the summary; a failing mail server is logged, the snapshot stays stored."""
    recipients = manager_emails()
    if not recipients:
        return 0
    try:
        return send_mail(f"Oversight review {review.month}", summary_text(review), None, recipients)
    except Exception:  # the snapshot is what matters; the mail can be resent by hand
        log.exception("Could not email the review of %s", review.month)
        return 0
