"""The monthly snapshot task: stores the month just ended once, and emails managers."""

from __future__ import annotations

import pytest
import time_machine

from oversight.celery import app
from oversight.models import MonthlyReview
from oversight.reviews.tasks import handle_monthly_review
from tests.conftest import make_agent
from tests.oversight.reviews.helpers import at, make_request

pytestmark = pytest.mark.django_db


@pytest.fixture
def reachable_manager(manager, operator):
    manager.email = "maria@example.org"
    manager.save()
    operator.email = "olivia@example.org"
    operator.save()
    return manager


@time_machine.travel(at("2026-12-01 00:05"), tick=False)
def test_on_the_first_it_stores_the_month_just_ended_and_emails_managers(reachable_manager, mailoutbox, settings):
    settings.SITE_URL = "https://oversight.example.org"
    scraper = make_agent("scraper-7").agent
    make_request(scraper, at("2026-11-30 23:59:59"), metrics={"delegation_depth": 5})
    make_request(scraper, at("2026-12-01 00:01"))  # December: not in this review
    assert handle_monthly_review() is True
    review = MonthlyReview.objects.get()
    assert review.month == "2026-11" and review.figures["headline"]["requests"] == 1
    (mail,) = mailoutbox
    assert mail.to == ["maria@example.org"]  # managers only, not operators
    assert mail.subject == "Oversight review 2026-11"
    assert "https://oversight.example.org/reports/2026-11/" in mail.body
    assert "Requests: 1" in mail.body and "Needed a human (critical share): 100.0%" in mail.body


@time_machine.travel(at("2027-01-01 00:05"), tick=False)
def test_a_second_run_stores_and_sends_nothing(reachable_manager, mailoutbox):
    assert handle_monthly_review() is True
    assert handle_monthly_review() is False
    assert list(MonthlyReview.objects.values_list("month", flat=True)) == ["2026-12"]
    assert len(mailoutbox) == 1


@time_machine.travel(at("2026-12-01 00:05"), tick=False)
def test_a_failing_mail_server_keeps_the_snapshot(reachable_manager, settings):
    settings.EMAIL_BACKEND = "tests.oversight.test_reports_tasks.BrokenMailServer"
    assert handle_monthly_review() is True
    assert MonthlyReview.objects.filter(month="2026-11").exists()


class BrokenMailServer:
    def __init__(self, *args, **kwargs):
        pass

    def send_messages(self, messages):
        raise ConnectionRefusedError("no mail server")


def test_beat_runs_it_on_the_first_of_each_month():
    app.finalize()
    assert "oversight.monthly_review" in app.tasks
    entry = app.conf.beat_schedule["monthly review"]
    assert entry["task"] == "oversight.monthly_review"
    assert entry["schedule"].day_of_month == {1} and entry["schedule"].hour == {0}
