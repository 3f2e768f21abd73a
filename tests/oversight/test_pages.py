"""The operators' and managers' pages: who may open them, and what they show."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from oversight import actions
from oversight.models import OversightRequest, Source, Status
from tests.conftest import past_deadline

PAGES_FOR_OPERATORS = ["/queue/"]
PAGES_FOR_BOTH = ["/history/", "/requests/{id}/"]


def submit(agent, summary="Delegate the scrape", *, critical=True, **fields) -> OversightRequest:
    metrics = {"memory_pressure": 93.5 if critical else 10.0, "delegation_depth": 1}
    submission = actions.Submission(
        operation=fields.pop("operation", "delegate"), summary=summary, payload=fields.pop("payload", {}),
        metrics=metrics, **fields,
    )
    req, _ = actions.do_submit(agent.agent, submission)
    return req


@pytest.fixture
def pending(agent):
    return submit(agent)


def pages(req) -> list[str]:
    return [p.format(id=req.id) for p in PAGES_FOR_OPERATORS + PAGES_FOR_BOTH]


def test_it_sends_anonymous_people_to_the_login_page(client, pending):
    for page in pages(pending):
        response = client.get(page)
        assert response.status_code == 302, page
        assert response["Location"].startswith("/login/?next=")


def test_it_never_opens_a_page_for_an_agent_key(client, agent, pending):
    for page in pages(pending):
        response = client.get(page, headers=agent.headers)
        assert response.status_code == 302, page
        assert response["Location"].startswith("/login/")


def test_it_refuses_people_without_a_role(client, outsider, pending):
    client.force_login(outsider)
    for page in pages(pending):
        assert client.get(page).status_code == 403, page


def test_it_lets_operators_open_every_page(client, operator, pending):
    client.force_login(operator)
    for page in pages(pending):
        assert client.get(page).status_code == 200, page


def test_it_keeps_the_queue_for_operators_but_shows_managers_requests_and_history(client, manager, pending):
    client.force_login(manager)
    assert client.get("/queue/").status_code == 403
    for page in PAGES_FOR_BOTH:
        assert client.get(page.format(id=pending.id)).status_code == 200, page


def test_it_redirects_the_root_to_the_queue(client):
    assert client.get("/")["Location"] == "/queue/"


def test_it_signs_in_and_out_with_the_login_form(client, operator):
    response = client.post("/login/", {"username": "olivia", "password": "correct horse battery", "next": "/queue/"})
    assert response.status_code == 302 and response["Location"] == "/queue/"
    assert client.get("/queue/").status_code == 200
    client.post("/logout/")
    assert client.get("/queue/").status_code == 302


def test_it_tells_a_wrong_password_without_signing_in(client, operator):
    response = client.post("/login/", {"username": "olivia", "password": "wrong"})
    assert response.status_code == 200
    assert b"didn't match" in response.content


def test_it_lists_critical_pending_requests_soonest_deadline_first(client, operator, agent):
    late = submit(agent, "later one")
    soon = submit(agent, "sooner one", timeout_seconds=60)
    submit(agent, "not critical", critical=False)
    client.force_login(operator)
    html = client.get("/queue/").content.decode()
    assert html.index(str(soon.id)) < html.index(str(late.id))
    assert "not critical" not in html
    assert "memory_pressure 93.5 &gt; 80" in html


def test_it_escapes_agent_text_everywhere(client, operator, agent):
    hostile = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    req = submit(agent, hostile, payload={"html": hostile}, operation="x<b>")
    client.force_login(operator)
    for page in ("/queue/", f"/requests/{req.id}/"):
        html = client.get(page).content.decode()
        assert "<script>alert" not in html and "<img src=x" not in html and "x<b>" not in html
        assert "&lt;script&gt;alert(" in html


def test_it_shows_everything_about_a_request(client, operator, agent):
    req = submit(agent, "Look at me", payload={"url": "https://example.org", "depth": 5})
    actions.do_decide(req.id, outcome=Status.REJECTED, source=Source.OPERATOR, by="oscar", reason="Too deep")
    client.force_login(operator)
    html = client.get(f"/requests/{req.id}/").content.decode()
    for text in ("Look at me", "&quot;depth&quot;: 5", "memory_pressure", "93.5", "version 1", "Too deep", "oscar",
                 "Submitted", "Evaluated", "Decided"):
        assert text in html, text
    assert 'class="decide approve-form"' not in html  # decided: nothing left to decide


def test_it_collapses_large_payloads(client, operator, agent):
    req = submit(agent, payload={"blob": "x" * 5000})
    client.force_login(operator)
    html = client.get(f"/requests/{req.id}/").content.decode()
    assert re.search(r"<details><summary>Show the payload \(\d+ characters\)</summary>", html)


def test_it_offers_managers_no_decision(client, manager, pending):
    client.force_login(manager)
    html = client.get(f"/requests/{pending.id}/").content.decode()
    assert "approve-form" not in html


def test_it_applies_a_passed_deadline_when_the_page_is_read(client, operator, agent, short_timeouts):
    req = past_deadline(submit(agent, timeout_seconds=5))
    client.force_login(operator)
    assert "timeout" in client.get(f"/requests/{req.id}/").content.decode()
    req.refresh_from_db()
    assert req.status == Status.APPROVED and req.decision_source == Source.TIMEOUT


def test_it_answers_404_for_an_unknown_request(client, operator):
    client.force_login(operator)
    assert client.get("/requests/00000000-0000-0000-0000-000000000000/").status_code == 404
    assert client.get("/requests/not-a-uuid/").status_code == 404


# --- History --------------------------------------------------------------------------


def decided(agent, summary, *, outcome=Status.APPROVED, by="olivia", operation="delegate"):
    req = submit(agent, summary, operation=operation)
    return actions.do_decide(req.id, outcome=outcome, source=Source.OPERATOR, by=by, reason="because")


def history(client, **params) -> str:
    return client.get("/history/", params).content.decode()


def test_it_lists_decisions_newest_first_without_pending_ones(client, operator, agent, pending):
    first = decided(agent, "first decided")
    second = decided(agent, "second decided")
    client.force_login(operator)
    html = history(client)
    assert html.index(str(second.id)) < html.index(str(first.id))
    assert str(pending.id) not in html


def test_it_filters_history(client, operator, agent, other_agent):
    approved = decided(agent, "alpha scrape")
    rejected = decided(agent, "beta scrape", outcome=Status.REJECTED, by="oscar", operation="write")
    by_other = decided(other_agent, "gamma write")
    policy_approved = submit(agent, "delta quiet", critical=False)
    client.force_login(operator)
    cases = {
        "status=rejected": {rejected},
        "source=policy": {policy_approved},
        "decided_by=oscar": {rejected},
        "operation=write": {rejected},
        "agent=writer-2": {by_other},
        "q=SCRAPE": {approved, rejected},
    }
    everything = {approved, rejected, by_other, policy_approved}
    for query, expected in cases.items():
        html = client.get(f"/history/?{query}").content.decode()
        shown = {r for r in everything if str(r.id) in html}
        assert shown == expected, query


def test_it_filters_history_by_date(client, operator, agent):
    # Decided in March and April (the database's clock judges deadlines: the decisions
    # are made now and dated afterwards, not made with this process's clock moved back).
    march, april = decided(agent, "in march"), decided(agent, "in april")
    OversightRequest.objects.filter(id=march.id).update(decided_at=datetime(2026, 3, 1, 12, tzinfo=UTC))
    OversightRequest.objects.filter(id=april.id).update(decided_at=datetime(2026, 4, 2, 12, tzinfo=UTC))
    client.force_login(operator)
    html = history(client, since="2026-04-01", until="2026-04-30")
    assert str(april.id) in html and str(march.id) not in html
    html = history(client, until="2026-03-01")
    assert str(march.id) in html and str(april.id) not in html


def test_it_pages_history_with_a_cursor(client, operator, agent, monkeypatch):
    monkeypatch.setattr("oversight.views.HISTORY_PAGE_SIZE", 2)
    made = [decided(agent, f"number {i}") for i in range(5)]
    client.force_login(operator)
    seen = []
    url = "/history/?status=approved"
    while url:
        html = client.get(url).content.decode()
        seen += sorted((r.id for r in made if str(r.id) in html), key=lambda i: html.index(str(i)))
        found = re.search(r'href="\?([^"]+)" rel="next"', html)
        url = "/history/?" + found.group(1).replace("&amp;", "&") if found else None
        assert url is None or "status=approved" in url
    assert seen == [r.id for r in reversed(made)]


def test_it_pages_back_to_newer_rows(client, operator, agent, monkeypatch):
    monkeypatch.setattr("oversight.views.HISTORY_PAGE_SIZE", 2)
    made = [decided(agent, f"number {i}") for i in range(5)]
    client.force_login(operator)

    def page(url):
        html = client.get(url).content.decode()
        ids = sorted((r.id for r in made if str(r.id) in html), key=lambda i: html.index(str(i)))
        links = {rel: "/history/?" + q.replace("&amp;", "&") for q, rel in re.findall(r'href="\?([^"]+)" rel="(next|prev)"', html)}
        return ids, links

    newest_first = [r.id for r in reversed(made)]
    first, links = page("/history/")
    assert first == newest_first[:2] and "prev" not in links
    second, links = page(links["next"])
    third, links = page(links["next"])
    assert third == newest_first[4:] and "next" not in links
    back, links = page(links["prev"])
    assert back == second == newest_first[2:4]
    top, links = page(links["prev"])
    assert top == first and "prev" not in links


def test_it_ignores_bad_filters(client, operator, agent):
    kept = decided(agent, "still here")
    client.force_login(operator)
    for query in ("since=yesterday", "status=bogus", "since=2026-13-45"):
        response = client.get(f"/history/?{query}")
        assert response.status_code == 200, query
        assert str(kept.id) in response.content.decode(), query


def test_it_answers_a_bad_page_link_with_400(client, operator, agent):
    decided(agent, "still here")
    client.force_login(operator)
    good_id = "6f1c0000-0000-4000-8000-000000000000"
    for query in ("after=garbage", "after=2026-01-01T00:00:00Z_nope", "after=_", "before=garbage", "before=_",
                  f"after=2026-13-45T00:00:00Z_{good_id}", f"before=2026-02-30T25:00:00%2B00:00_{good_id}",
                  f"after=2026-01-01T00:00:00_{good_id}"):
        response = client.get(f"/history/?{query}")
        assert response.status_code == 400, query
        assert "not valid" in response.content.decode(), query


@pytest.mark.django_db
def test_the_start_page_sends_each_role_to_its_page(client, operator, manager):
    assert client.get("/")["Location"] == "/queue/"
    client.login(username="olivia", password="correct horse battery")
    assert client.get("/")["Location"] == "/queue/"
    client.logout()
    client.login(username="maria", password="correct horse battery")
    assert client.get("/")["Location"] == "/reports/"
