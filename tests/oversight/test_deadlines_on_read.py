"""§9.2: every read shows the deadline as kept, with no worker and no beat running.

Each read gets a request of its own that went overdue unseen (no sweep ran), so each
read has to apply the timeout itself; a read that only showed what is stored would
show it as pending."""

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from oversight import actions
from oversight.consumers import snapshot
from oversight.models import OversightRequest, Status
from oversight.reviews import reports
from tests.conftest import past_deadline
from tests.oversight.api_helpers import get

pytestmark = pytest.mark.django_db(transaction=True)


def overdue(agent, summary: str) -> OversightRequest:
    req, _ = actions.do_submit(
        agent.agent, actions.Submission("delegate", summary, {}, {"delegation_depth": 5}, timeout_seconds=5)
    )
    assert req.status == Status.PENDING
    return req


def test_it_counts_an_overdue_request_as_decided_by_the_timeout_on_every_read(
    client, agent, operator, manager, short_timeouts
):
    readers = {}

    def reader(func):
        readers[func.__name__] = func
        return func

    @reader
    def api_list_filtered_by_pending(req):
        body = get(client, "/api/v1/requests?status=pending", agent).json()
        assert str(req.id) not in [r["id"] for r in body["results"]]
        body = get(client, "/api/v1/requests?status=approved", agent).json()
        assert str(req.id) in [r["id"] for r in body["results"]]

    @reader
    def api_list(req):
        body = get(client, "/api/v1/requests?operation=delegate&limit=100", agent).json()
        [shown] = [r for r in body["results"] if r["id"] == str(req.id)]
        assert shown["status"] == "approved" and shown["decision"]["source"] == "timeout"

    @reader
    def queue_page(req):
        client.force_login(operator)
        html = client.get("/queue/").content.decode()
        assert req.summary not in html

    @reader
    def feed_snapshot(req):
        assert str(req.id) not in [r["id"] for r in snapshot()["pending"]]

    @reader
    def request_page(req):
        client.force_login(operator)
        html = client.get(f"/requests/{req.id}/").content.decode()
        assert "timeout" in html

    @reader
    def metrics(req):
        text = client.get("/metrics").content.decode()
        assert "oversight_pending_requests 0.0" in text

    @reader
    def report(req):
        data = reports.review(reports.parse_month(timezone.now().strftime("%Y-%m")), live=True)
        assert data["headline"]["pending"] == 0
        assert data["headline"]["timeout_approved"] >= 1

    for name, read in readers.items():
        req = past_deadline(overdue(agent, f"overdue for {name}"))
        # This process's clock a minute behind: the database's clock decides (spec §9.1).
        with time_machine.travel(timezone.now() - timedelta(minutes=1), tick=True):
            read(req)
        req.refresh_from_db()
        assert (req.status, req.decision_source) == (Status.APPROVED, "timeout"), name


def test_no_read_times_out_early_when_this_processs_clock_runs_ahead(client, agent, operator, short_timeouts):
    req = overdue(agent, "not due yet by the database clock")
    with time_machine.travel(req.deadline + timedelta(hours=1), tick=True):
        assert str(req.id) in [r["id"] for r in get(client, "/api/v1/requests?status=pending", agent).json()["results"]]
        assert get(client, f"/api/v1/requests/{req.id}", agent).json()["status"] == "pending"
        assert str(req.id) in [r["id"] for r in snapshot()["pending"]]
        client.force_login(operator)
        assert req.summary in client.get("/queue/").content.decode()
        assert "oversight_pending_requests 1.0" in client.get("/metrics").content.decode()
        assert actions.expire_overdue() == 0
    req.refresh_from_db()
    assert req.status == Status.PENDING


def test_it_costs_nothing_when_nothing_is_overdue(agent, short_timeouts, django_assert_num_queries):
    overdue(agent, "not yet")
    with django_assert_num_queries(1):
        assert actions.expire_overdue() == 0
