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
from tests.oversight.api_helpers import get

pytestmark = pytest.mark.django_db(transaction=True)


def overdue(agent, summary: str) -> OversightRequest:
    req, _ = actions.do_submit(
        agent.agent, actions.Submission("delegate", summary, {}, {"delegation_depth": 5}, timeout_seconds=5)
    )
    assert req.status == Status.PENDING
    return req


def test_it_counts_an_overdue_request_as_decided_by_the_timeout_on_every_read(
    client, agent, operator, manager, short_timeouts, time_machine_fixture
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
        req = overdue(agent, f"overdue for {name}")
        time_machine_fixture.move_to(req.deadline + timedelta(seconds=1), tick=False)
        read(req)
        req.refresh_from_db()
        assert (req.status, req.decision_source) == (Status.APPROVED, "timeout"), name
        time_machine_fixture.move_to(timezone.now() + timedelta(seconds=1), tick=False)


@pytest.fixture
def time_machine_fixture():
    with time_machine.travel(timezone.now(), tick=False) as traveller:
        yield traveller


def test_it_costs_nothing_when_nothing_is_overdue(agent, short_timeouts, django_assert_num_queries):
    overdue(agent, "not yet")
    with django_assert_num_queries(1):
        assert actions.expire_overdue() == 0
