"""The approval queue in a real headless Chromium against the real stack
(uvicorn + Celery worker + beat + Redis): live rows, deciding, races, the timeout,
hostile text, monitoring events and reconnecting after a restart."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from django.utils import timezone
from playwright.sync_api import expect

from oversight import actions
from oversight.events import send_event_now
from oversight.models import Source, Status
from oversight.runner import Supervisor, wait_for_port, web_argv
from oversight.serializers import iso
from tests.browser.conftest import screenshot

pytestmark = [pytest.mark.browser, pytest.mark.live]



def submit(site: str, agent, summary: str, **fields) -> dict:
    body = {
        "operation": "delegate",
        "summary": summary,
        "payload": {"url": "https://example.org/docs", "depth": 6},
        "metrics": {"memory_pressure": 91.5, "delegation_depth": 6, "circular_refs": 1},
    } | fields
    answer = httpx.post(site + "/api/v1/requests", json=body, headers=agent.headers, timeout=10)
    assert answer.status_code == 201, answer.text
    return answer.json()


def read(site: str, agent, request_id: str) -> dict:
    return httpx.get(f"{site}/api/v1/requests/{request_id}", headers=agent.headers, timeout=10).json()


def push_memory(site: str, agent) -> None:
    """Two process samples from the agent, so its page has memory to show."""
    now = timezone.now()
    samples = [
        {"at": iso(now - timedelta(seconds=30 * n)), "pid": 4242, "process": "scraper", "rss_bytes": (300 - 20 * n) << 20,
         "vms_bytes": 900 << 20, "gc": {"collected": 12, "uncollectable": 0}, "cycles_found": 3}
        for n in range(2)
    ]
    answer = httpx.post(site + "/api/v1/metrics", json={"host": "web-1", "samples": samples}, headers=agent.headers)
    assert answer.status_code == 202, answer.text


def row(page, request_id: str):
    return page.locator(f'#queue li.item[data-id="{request_id}"]')


def wait_live(page) -> None:
    expect(page.locator("#live-status")).to_have_attribute("data-state", "live")


def test_it_shows_a_submitted_request_live_and_the_agent_gets_the_approval(live, open_page, operator, agent):
    page = open_page(live.url)
    expect(page).to_have_url(f"{live.url}/login/?next=/queue/")
    page.get_by_label("Username").fill("olivia")
    page.get_by_label("Password").fill("correct horse battery")
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{live.url}/queue/")
    wait_live(page)

    push_memory(live.url, agent)
    later = submit(live.url, agent, "Summarise the quarterly logs with a sub-agent", operation="summarise")
    first = submit(live.url, agent, "Delegate scraping of the docs site to sub-agent #3", timeout_seconds=120)
    expect(row(page, first["id"])).to_be_visible()
    expect(row(page, later["id"])).to_be_visible()
    # Soonest deadline first, fired rules as badges, a countdown saying what happens then.
    expect(page.locator("#queue li.item").first).to_have_attribute("data-id", first["id"])
    expect(row(page, first["id"]).locator(".badge")).to_have_text(["memory_pressure 91.5 > 80", "delegation_depth 6 > 4"])
    expect(row(page, first["id"]).locator(".countdown")).to_contain_text("auto-approves in 1:")
    expect(page).to_have_title("(2) Queue · Oversight")
    send_event_now("pressure.sample", {"host": "web-1", "pressure": 62.3, "available_bytes": 3 << 30,
                                       "at": iso(timezone.now())})
    expect(page.locator('#pressure li[data-host="web-1"] .value')).to_have_text("62.3%")
    screenshot(page, "queue.png", doc="queue.png")

    row(page, first["id"]).get_by_role("button", name="Approve").click()
    expect(row(page, first["id"]).locator(".result")).to_have_text("Approved.")
    expect(row(page, first["id"])).to_have_count(0)
    expect(page).to_have_title("(1) Queue · Oversight")
    decided = read(live.url, agent, first["id"])
    assert decided["status"] == "approved"
    assert decided["decision"]["by"] == "olivia" and decided["decision"]["source"] == "operator"

    page.goto(f"{live.url}/requests/{later['id']}/")
    expect(page.locator("#status")).to_have_text("pending")
    expect(page.locator("#countdown")).to_contain_text("auto-approves in")
    expect(page.locator("#memory-title + .table-wrap tbody tr")).to_have_count(2)
    screenshot(page, "request.png", doc="request.png", full_page=True)


def test_it_needs_a_reason_to_reject_and_decides_in_bulk(live, open_page, operator, agent):
    page = open_page(live.url, "olivia")
    wait_live(page)
    target = submit(live.url, agent, "Rewrite the cache layer")
    others = [submit(live.url, agent, f"Batch job {n}") for n in (1, 2)]
    item = row(page, target["id"])
    item.get_by_role("button", name="Reject").click()
    expect(item.locator(".result")).to_have_text("A reason is required to reject.")
    assert read(live.url, agent, target["id"])["status"] == "pending"

    item.get_by_label("Reason to reject delegate").fill("Delegation too deep")
    item.get_by_role("button", name="Reject").click()
    expect(item).to_have_count(0)
    decision = read(live.url, agent, target["id"])["decision"]
    assert (decision["outcome"], decision["reason"]) == ("rejected", "Delegation too deep")

    for other in others:
        row(page, other["id"]).locator(".pick").check()
    expect(page.locator("#selected-count")).to_have_text("2 selected")
    page.get_by_role("button", name="Approve selected").click()
    expect(page.locator("#bulk-result")).to_have_text("2 of 2 approved.")
    expect(page.locator("#queue li.item")).to_have_count(0)
    expect(page.locator("#empty")).to_be_visible()
    assert {read(live.url, agent, o["id"])["status"] for o in others} == {"approved"}


def test_it_disappears_a_row_another_operator_decided(live, open_page, operator, second_operator, agent):
    mine = open_page(live.url, "olivia")
    theirs = open_page(live.url, "oscar")
    wait_live(mine)
    wait_live(theirs)
    request = submit(live.url, agent, "Delete the staging bucket")
    expect(row(mine, request["id"])).to_be_visible()
    expect(row(theirs, request["id"])).to_be_visible()

    # Oscar decides with the keyboard: j moves to the first row, a approves it.
    theirs.locator("body").press("?")
    expect(theirs.locator("#help")).to_be_visible()
    theirs.keyboard.press("Escape")
    theirs.locator("body").press("j")
    theirs.locator("body").press("a")
    expect(row(mine, request["id"]).locator(".result")).to_have_text("Already approved by oscar.")
    expect(row(mine, request["id"])).to_have_count(0)
    assert read(live.url, agent, request["id"])["decision"]["by"] == "oscar"


def test_it_disappears_a_row_when_the_timeout_passes(live, open_page, operator, agent, short_timeouts):
    page = open_page(live.url, "olivia")
    wait_live(page)
    request = submit(live.url, agent, "Short fuse", timeout_seconds=2)
    expect(row(page, request["id"]).locator(".countdown")).to_contain_text("auto-approv")
    expect(row(page, request["id"])).to_have_count(0, timeout=8000)
    decision = read(live.url, agent, request["id"])["decision"]
    assert (decision["outcome"], decision["source"], decision["by"]) == ("approved", "timeout", None)


def test_it_renders_hostile_text_as_text(live, open_page, operator, agent):
    hostile = "<img src=x onerror=window.__owned=1><script>window.__owned=2</script>"
    operation = "op<img src=x onerror=window.__owned=3>"  # fits the 64-character column
    page = open_page(live.url, "olivia")
    page.on("dialog", lambda dialog: pytest.fail(f"a dialog opened: {dialog.message}"))
    wait_live(page)
    # The API refuses such an operation name; the record is written directly so the
    # pages are tested against it anyway (defence in depth).
    submission = actions.Submission(
        operation=operation, summary=hostile, payload={"note": hostile}, metrics={"memory_pressure": 99.0}
    )
    req, _ = actions.do_submit(agent.agent, submission)
    item = row(page, str(req.id))
    expect(item.locator(".summary")).to_have_text(hostile)
    expect(item.locator(".operation")).to_have_text(operation)
    page.reload()
    expect(row(page, str(req.id)).locator(".summary")).to_have_text(hostile)
    page.goto(f"{live.url}/requests/{req.id}/")
    expect(page.locator(".payload")).to_contain_text(hostile)
    expect(page.locator("p.summary")).to_have_text(hostile)
    assert page.evaluate("window.__owned") is None
    assert page.locator("article img, article script").count() == 0


def test_it_shows_characters_no_one_can_see_as_their_escapes(live, open_page, operator, agent):
    """A right-to-left override makes "rm -rf /tmp/‮fdp.txt" read as "…txt.pdf": the live
    row (the feed's script), the page as served and the request page show the escape."""
    summary = "Delete /tmp/\u202efdp.txt"
    escaped = "Delete /tmp/\\u202efdp.txt"
    page = open_page(live.url, "olivia")
    wait_live(page)
    created = submit(live.url, agent, summary=summary, payload={"path": "/tmp/\u202efdp.txt"})
    expect(row(page, created["id"]).locator(".summary")).to_have_text(escaped)
    page.reload()
    expect(row(page, created["id"]).locator(".summary")).to_have_text(escaped)
    page.goto(f"{live.url}/requests/{created['id']}/")
    expect(page.locator("p.summary")).to_have_text(escaped)
    expect(page.locator(".payload").first).to_contain_text('"/tmp/\\u202efdp.txt"')


def test_it_shows_alerts_and_memory_pressure_from_the_feed(live, open_page, operator):
    page = open_page(live.url, "olivia")
    wait_live(page)
    alert = {"id": 41, "host": "web-1", "process": "", "kind": "memory_pressure", "severity": "critical",
             "value": 93.4, "threshold": 90, "started_at": "2026-11-25T10:00:00.000Z", "resolved_at": None}
    send_event_now("pressure.sample", {"host": "web-1", "pressure": 93.4, "available_bytes": 1 << 28,
                                       "at": "2026-11-25T10:00:00.000Z"})
    send_event_now("alert.raised", {"alert": alert})
    expect(page.locator('#pressure li[data-host="web-1"] .value')).to_have_text("93.4%")
    expect(page.locator('#alerts .alert[data-id="41"]')).to_contain_text("web-1: memory_pressure 93.4 > 90")
    send_event_now("alert.resolved", {"alert": alert | {"resolved_at": "2026-11-25T10:01:00.000Z"}})
    expect(page.locator('#alerts .alert[data-id="41"]')).to_have_count(0)


def test_it_shows_the_right_queue_after_the_server_restarts(live, open_page, operator, agent):
    from tests.conftest import start_stack

    # A web server of its own (the shared one keeps serving the other tests).
    stack = start_stack(worker=False, beat=False)
    port = int(stack.url.rsplit(":", 1)[1])
    restarted = Supervisor(prefix_logs=False)
    try:
        page = open_page(stack.url, "olivia")
        wait_live(page)
        kept = submit(stack.url, agent, "Stays pending")
        gone = submit(stack.url, agent, "Decided while the page was offline")
        expect(row(page, gone["id"])).to_be_visible()

        stack.supervisor.stop()  # the processes only: the restart below logs into the stack's folder
        expect(page.locator("#live-status")).to_have_attribute("data-state", "offline")
        expect(page.locator("#live-status")).to_contain_text("Offline")
        actions.do_decide(gone["id"], outcome=Status.REJECTED, source=Source.OPERATOR, by="oscar", reason="No")
        missed, _ = actions.do_submit(agent.agent, actions.Submission(
            operation="delegate", summary="Arrived while the page was offline", payload={},
            metrics={"memory_pressure": 95.0}))

        restarted.start("web", web_argv(port), env=stack.env, log=stack.logs / "web-restarted.log")
        wait_for_port(port, what="uvicorn", timeout=30)
        wait_live(page)
        expect(page.locator("#queue li.item")).to_have_count(2, timeout=15000)
        expect(row(page, kept["id"])).to_be_visible()
        expect(row(page, str(missed.id))).to_be_visible()
        expect(row(page, gone["id"])).to_have_count(0)
    finally:
        restarted.stop()
        stack.stop()
