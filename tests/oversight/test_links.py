"""Decision links (spec §9.7): signed, single use, bound to one person; a GET never decides."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from oversight import actions
from oversight.links import links_for
from oversight.models import DecisionLink, OversightRequest, Status

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def links_on(settings):
    settings.OVERSIGHT_DECISION_LINKS = True
    settings.SITE_URL = "https://oversight.example"


@pytest.fixture
def pending(agent) -> OversightRequest:
    submission = actions.Submission(operation="delegate", summary="Scrape", payload={}, metrics={"memory_pressure": 95.0})
    return actions.do_submit(agent.agent, submission)[0]


@pytest.fixture
def urls(pending, operator) -> dict[str, str]:
    made = links_for(pending, operator)
    assert made is not None
    return {outcome: url.removeprefix("https://oversight.example") for outcome, url in made.items()}


def signed_in(user) -> Client:
    browser = Client()
    browser.force_login(user)
    return browser


def status_of(req) -> str:
    req.refresh_from_db()
    return req.status


def test_it_makes_a_pair_of_signed_links_for_a_person_who_may_decide(pending, operator, manager, settings):
    made = links_for(pending, operator)
    assert set(made) == {"approve", "reject"}
    assert all(url.startswith("https://oversight.example/d/") for url in made.values())
    assert DecisionLink.objects.filter(request=pending, user=operator).count() == 2
    assert links_for(pending, manager) is None  # not an operator
    settings.OVERSIGHT_DECISION_LINKS = False
    assert links_for(pending, operator) is None


def test_a_prefetching_get_decides_nothing(client, pending, urls, operator):
    for browser in (client, signed_in(operator)):
        response = browser.get(urls["approve"])
        assert response.status_code == 200
        assert response["Referrer-Policy"] == "no-referrer" and "no-store" in response["Cache-Control"]
    assert status_of(pending) == Status.PENDING
    assert b"Approve this request" in signed_in(operator).get(urls["approve"]).content


def test_the_person_decides_with_one_post_and_the_pair_is_burnt(pending, urls, operator):
    browser = signed_in(operator)
    response = browser.post(urls["approve"])
    assert response.status_code == 200 and b"Done: approved" in response.content
    pending.refresh_from_db()
    assert (pending.status, pending.decision_source, pending.decided_by) == ("approved", "operator", "olivia")
    # Used: the same link and its twin answer 409 to a POST and 200 to a GET, with the state.
    for url in urls.values():
        again = browser.post(url, {"reason": "too late"})
        assert again.status_code == 409 and b"has been used" in again.content and b"approved" in again.content
        assert browser.get(url).status_code == 200
    assert status_of(pending) == Status.APPROVED


def test_a_reject_link_asks_for_the_reason(pending, urls, operator):
    browser = signed_in(operator)
    assert browser.post(urls["reject"], {"reason": "  "}).status_code == 400
    assert status_of(pending) == Status.PENDING
    assert browser.post(urls["reject"], {"reason": "Not now"}).status_code == 200
    pending.refresh_from_db()
    assert (pending.status, pending.decision_reason) == ("rejected", "Not now")


def test_anyone_else_decides_nothing(client, pending, urls, second_operator):
    assert signed_in(second_operator).post(urls["approve"]).status_code == 403
    assert client.post(urls["approve"]).status_code == 403
    assert status_of(pending) == Status.PENDING


def test_an_expired_link_shows_the_state_and_decides_nothing(pending, urls, operator):
    DecisionLink.objects.filter(request=pending).update(expires_at=timezone.now() - timedelta(seconds=1))
    browser = signed_in(operator)
    assert browser.get(urls["approve"]).status_code == 200
    assert browser.post(urls["approve"]).status_code == 409
    assert status_of(pending) == Status.PENDING


def test_a_forged_or_altered_token_is_not_found(pending, urls, operator):
    browser = signed_in(operator)
    assert browser.get("/d/not-a-token/").status_code == 404
    assert browser.post(urls["approve"][:-3] + "xy/").status_code == 404
    assert status_of(pending) == Status.PENDING


def test_a_link_that_is_not_valid_still_sends_the_link_pages_headers(client, pending, urls, operator):
    for browser in (client, signed_in(operator)):
        for method, url in (("get", "/d/not-a-token/"), ("post", urls["approve"][:-3] + "xy/")):
            response = getattr(browser, method)(url)
            assert response.status_code == 404
            assert response["Referrer-Policy"] == "no-referrer" and "no-store" in response["Cache-Control"]


def test_signing_in_keeps_the_token_on_the_server_and_comes_back_to_it(client, pending, urls, operator):
    first = client.get(urls["approve"])
    assert b'href="/login/"' in first.content and b"next=" not in first.content
    signed = client.post("/login/", {"username": "olivia", "password": "correct horse battery"})
    assert signed.status_code == 302 and "/d/" not in signed["Location"]
    back = client.get(signed["Location"])
    assert back.status_code == 200 and b"Approve this request" in back.content
    assert status_of(pending) == Status.PENDING
    assert client.post(urls["approve"]).status_code == 200
    assert status_of(pending) == Status.APPROVED


def test_tokens_never_reach_the_log(client, pending, urls, second_operator, caplog):
    signed_in(second_operator).post(urls["approve"])
    records = [r for r in caplog.records if r.name.startswith("django.")]
    assert records, "a 403 is logged"
    console = logging.getLogger().handlers[0]
    token = urls["approve"].split("/")[2]
    for record in records:
        console.filter(record)
        assert token not in console.format(record)


def _form_token(response) -> str:
    import re

    return re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', response.content).group(1).decode()


def test_a_link_post_with_a_null_origin_still_needs_the_csrf_token(pending, urls, operator):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(operator)
    token = _form_token(browser.get(urls["approve"]))
    assert browser.post(urls["approve"], headers={"Origin": "null"}).status_code == 403
    assert status_of(pending) == Status.PENDING
    assert browser.post(urls["approve"], {"csrfmiddlewaretoken": token}, headers={"Origin": "null"}).status_code == 200
    assert status_of(pending) == Status.APPROVED


def test_a_null_origin_is_refused_everywhere_else(pending, operator):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(operator)
    token = _form_token(browser.get(f"/requests/{pending.id}/"))
    answer = browser.post(f"/requests/{pending.id}/decide", {"outcome": "approve", "csrfmiddlewaretoken": token},
                          headers={"Origin": "null"})
    assert answer.status_code == 403
    assert status_of(pending) == Status.PENDING


def test_links_follow_who_may_decide(agent, operator, second_operator):
    from django.contrib.auth.models import Group

    agent.agent.owner = operator
    agent.agent.save()
    submission = actions.Submission(operation="delegate", summary="s", payload={}, metrics={"memory_pressure": 95.0})
    owned = actions.do_submit(agent.agent, submission)[0]
    assert links_for(owned, operator) is None  # the owner never decides
    assert links_for(owned, second_operator) is not None
    actions.do_change_policy("*", {"approver_groups": ["sre"], "timeout_action": "reject"}, by="mia")
    agent.agent.owner = None
    agent.agent.save()
    grouped = actions.do_submit(agent.agent, submission)[0]
    assert links_for(grouped, second_operator) is None
    second_operator.groups.add(Group.objects.get_or_create(name="sre")[0])
    second_operator = type(second_operator).objects.get(pk=second_operator.pk)  # groups are read once per object
    assert links_for(grouped, second_operator) is not None


def test_someone_else_signed_in_gets_the_sign_in_prompt_and_nothing_about_the_request(pending, urls, second_operator):
    browser = signed_in(second_operator)
    for url in urls.values():
        page = browser.get(url)
        assert page.status_code == 200
        assert b"Sign in to decide" in page.content and b"signed in as oscar" in page.content
        assert b"Scrape" not in page.content and b"Approve this request" not in page.content
        assert page["Referrer-Policy"] == "no-referrer" and "no-store" in page["Cache-Control"]
    refused = browser.post(urls["approve"])
    assert refused.status_code == 403 and b"Scrape" not in refused.content
    # The prompt keeps no token in their session: their queue is still their queue.
    assert b"Sign in to decide" not in browser.get("/", follow=True).content
    assert status_of(pending) == Status.PENDING


def test_a_link_to_a_request_decided_elsewhere_shows_its_state(pending, urls, operator):
    actions.do_decide(pending.id, outcome=Status.REJECTED, source="operator", by="oscar", reason="No")
    browser = signed_in(operator)
    shown = browser.get(urls["approve"])
    assert shown.status_code == 200 and b"decided already" in shown.content and b"rejected" in shown.content
    refused = browser.post(urls["approve"])
    assert refused.status_code == 409 and b"decided already" in refused.content
    assert status_of(pending) == Status.REJECTED


def test_a_person_who_may_no_longer_decide_sees_the_state_and_is_refused_on_post(pending, urls, operator):
    operator.groups.clear()
    browser = signed_in(operator)
    shown = browser.get(urls["approve"])
    assert shown.status_code == 200 and b"You may not decide" in shown.content
    assert b"Approve this request" not in shown.content
    assert browser.post(urls["approve"]).status_code == 403
    assert status_of(pending) == Status.PENDING


def test_a_repeat_approval_through_a_link_is_409_under_the_two_person_rule(agent, operator):
    actions.do_change_policy("drop-db", {"required_approvals": 2, "timeout_action": "reject", "always": True},
                             by="maria")
    req = actions.do_submit(agent.agent, actions.Submission("drop-db", "Drop it", {}, {}))[0]
    made = links_for(req, operator)
    url = made["approve"].removeprefix("https://oversight.example")
    actions.do_decide(req.id, outcome=Status.APPROVED, source="operator", by="olivia")  # from the queue
    browser = signed_in(operator)
    shown = browser.get(url)
    assert shown.status_code == 200 and b"You approved this request already" in shown.content
    again = browser.post(url)
    assert again.status_code == 409 and b"1 of 2" in again.content
    req.refresh_from_db()
    assert req.status == Status.PENDING and [a["by"] for a in req.approvals] == ["olivia"]
