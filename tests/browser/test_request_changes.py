"""Approving with changes and answering with a note, from a request's page in a real
headless Chromium; the agent reads the payload it may run and the note."""

from __future__ import annotations

import json

import pytest
from playwright.sync_api import expect

from tests.browser.test_queue import read, submit

pytestmark = [pytest.mark.browser, pytest.mark.live]


def test_an_operator_approves_an_edited_payload_after_seeing_the_changes(live, open_page, operator, agent):
    asked = submit(live.url, agent, "Scrape the docs site", payload={"url": "https://example.org/docs", "depth": 6})
    page = open_page(live.url, "olivia", f"/requests/{asked['id']}/")
    page.get_by_text("Approve with changes to the payload").click()
    editor = page.locator("#payload-editor")
    assert json.loads(editor.input_value()) == {"url": "https://example.org/docs", "depth": 6}

    # Not a JSON object: refused in the page, nothing sent.
    editor.fill("[1, 2]")
    page.locator("#approve-button").click()
    expect(page.locator("#payload-error")).to_contain_text("must be a JSON object")
    editor.fill('{"url": "https://example.org/docs", ')
    page.locator("#approve-button").click()
    expect(page.locator("#payload-error")).to_contain_text("Not valid JSON")
    assert read(live.url, agent, asked["id"])["status"] == "pending"

    # The first click shows what changes; the second approves.
    editor.fill('{"url": "https://example.org/docs", "depth": 2, "dry_run": true}')
    page.locator("#approve-note").fill("Depth 2 is plenty; dry run first.")
    page.locator("#approve-button").click()
    changes = page.locator("#payload-changes li")
    expect(changes).to_have_count(2)
    expect(changes.nth(0)).to_have_text("change /depth: was 6 → 2")
    expect(changes.nth(1)).to_have_text("add /dry_run → true")
    assert read(live.url, agent, asked["id"])["status"] == "pending"
    expect(page.locator("#approve-button")).to_have_text("Approve with 2 changes")
    page.locator("#approve-button").click()

    expect(page.locator("#status")).to_have_text("approved")
    decision = read(live.url, agent, asked["id"])["decision"]
    assert decision["payload"] == {"url": "https://example.org/docs", "depth": 2, "dry_run": True}
    assert decision["note"] == "Depth 2 is plenty; dry run first."
    expect(page.locator("#decision")).to_contain_text("Depth 2 is plenty; dry run first.")
    expect(page.locator(".timeline .changes li")).to_have_count(2)


def test_an_unchanged_approval_goes_out_at_the_first_click(live, open_page, operator, agent):
    asked = submit(live.url, agent, "Rotate the logs")
    page = open_page(live.url, "olivia", f"/requests/{asked['id']}/")
    page.locator("#approve-button").click()
    expect(page.locator("#status")).to_have_text("approved")
    decision = read(live.url, agent, asked["id"])["decision"]
    assert "payload" not in decision and decision["note"] == ""


def test_a_reject_sends_its_note_to_the_agent(live, open_page, operator, agent):
    asked = submit(live.url, agent, "Drop the cache table")
    page = open_page(live.url, "olivia", f"/requests/{asked['id']}/")
    page.locator("#reason").fill("Not during business hours")
    page.locator("#reject-note").fill("Ask again after 18:00 UTC.")
    page.get_by_role("button", name="Reject").click()
    expect(page.locator("#status")).to_have_text("rejected")
    decision = read(live.url, agent, asked["id"])["decision"]
    assert (decision["reason"], decision["note"]) == ("Not during business hours", "Ask again after 18:00 UTC.")


def test_a_standing_approval_is_granted_listed_used_and_revoked(live, open_page, operator, agent):
    from oversight import actions

    actions.do_change_policy("*", {"max_standing_seconds": 3600}, by="mia")
    asked = submit(live.url, agent, "Rotate the logs", payload={"host": "web-1"})
    page = open_page(live.url, "olivia", f"/requests/{asked['id']}/")
    page.locator("#standing-seconds").select_option("900")
    page.locator("#standing-uses").fill("5")
    page.locator("#approve-button").click()
    expect(page.locator("#status")).to_have_text("approved")

    queue = open_page(live.url, "olivia")
    grant = queue.locator("#grant-list li")
    expect(grant).to_have_count(1)
    expect(grant).to_contain_text("delegate by scraper-7")
    expect(grant).to_contain_text("5 of 5 uses left")

    again = submit(live.url, agent, "Rotate the logs", payload={"host": "web-1"})
    assert again["status"] == "approved" and again["decision"]["source"] == "standing"
    assert again["decision"]["by"] == "olivia"

    grant.get_by_role("button", name="Revoke").click()
    expect(queue.locator("#grants")).to_be_hidden()
    third = submit(live.url, agent, "Rotate the logs", payload={"host": "web-1"})
    assert third["status"] == "pending"
    queue.reload()
    expect(queue.locator(f'#queue li.item[data-id="{third["id"]}"]')).to_be_visible()
