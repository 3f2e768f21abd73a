"""The two-person rule and who may decide, in real headless Chromium against the real
stack: two operators in two browser contexts complete a quorum, and people who may not
decide (the agent's owner, an operator outside the approver groups) see no buttons."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from playwright.sync_api import expect

from oversight import actions
from tests.browser.conftest import screenshot
from tests.browser.test_queue import read, row, submit, wait_live

pytestmark = [pytest.mark.browser, pytest.mark.live]


def quorum_policy(**extra):
    actions.do_change_policy(
        "drop-db", {"always": True, "required_approvals": 2, "timeout_action": "reject"} | extra, by="maria"
    )


def two_operators_and_a_quorum_request(live, open_page, agent):
    """olivia's and oscar's queues, both live, and a drop-db request needing both of them."""
    quorum_policy()
    mine = open_page(live.url, "olivia")
    theirs = open_page(live.url, "oscar")
    wait_live(mine)
    wait_live(theirs)
    return mine, theirs, submit(live.url, agent, "Drop the staging database", operation="drop-db")


def test_two_operators_in_two_browsers_complete_a_quorum(live, open_page, operator, second_operator, agent):
    mine, theirs, request = two_operators_and_a_quorum_request(live, open_page, agent)
    for page in (mine, theirs):
        expect(row(page, request["id"]).locator(".approvals")).to_have_text("0 of 2 approved")

    row(mine, request["id"]).locator("button.approve").click()
    expect(row(mine, request["id"]).locator(".approvals")).to_have_text("1 of 2 approved — by olivia")
    expect(row(mine, request["id"]).locator("button.approve")).to_be_hidden()
    expect(row(mine, request["id"]).locator("button.reject")).to_be_visible()
    # The other operator's queue hears of it live, and still offers Approve.
    expect(row(theirs, request["id"]).locator(".approvals")).to_have_text("1 of 2 approved — by olivia")
    expect(row(theirs, request["id"]).locator("button.approve")).to_be_visible()
    assert read(live.url, agent, request["id"])["status"] == "pending"
    # A reload shows the same: no Approve for someone who already approved.
    mine.reload()
    expect(row(mine, request["id"]).locator(".approvals")).to_have_text("1 of 2 approved — by olivia")
    expect(row(mine, request["id"]).locator("button.approve")).to_have_count(0)

    row(theirs, request["id"]).locator("button.approve").click()
    expect(row(theirs, request["id"])).to_have_count(0)
    expect(row(mine, request["id"])).to_have_count(0)
    final = read(live.url, agent, request["id"])
    assert final["status"] == "approved" and [a["by"] for a in final["approvals"]] == ["olivia", "oscar"]


def test_the_owner_and_an_operator_outside_the_groups_see_no_buttons(live, open_page, operator, second_operator, agent):
    dba = Group.objects.create(name="dba")
    quorum_policy(approver_groups=["dba"], required_approvals=1)
    third = type(operator).objects.create_user("alice", password="correct horse battery")
    third.groups.add(dba, Group.objects.get(name="operators"))
    agent.agent.owner = third
    agent.agent.save()
    outsider = open_page(live.url, "olivia")  # an operator, not in dba
    owner = open_page(live.url, "alice")  # in dba, but owns the agent
    wait_live(outsider)
    wait_live(owner)
    request = submit(live.url, agent, "Drop the staging database", operation="drop-db")
    for page in (outsider, owner):
        item = row(page, request["id"])
        expect(item).to_be_visible()
        expect(item.locator(".not-yours")).to_be_visible()
        expect(item.locator("button.approve")).to_be_hidden()
        expect(item.locator("button.reject")).to_be_hidden()
    # After a reload too (the server-rendered rows), and on the request's own page.
    outsider.reload()
    expect(row(outsider, request["id"]).locator("button")).to_have_count(0)
    outsider.goto(f"{live.url}/requests/{request['id']}/")
    expect(outsider.locator("#not-yours")).to_be_visible()
    expect(outsider.locator("button.approve")).to_have_count(0)


def test_a_bulk_approval_counts_once_and_leaves_the_last_approval_to_a_single_one(
        live, open_page, operator, second_operator, agent):
    mine, theirs, request = two_operators_and_a_quorum_request(live, open_page, agent)
    row(mine, request["id"]).locator(".pick").check()
    mine.get_by_role("button", name="Approve selected").click()
    expect(mine.locator("#bulk-result")).to_have_text("1 of 1 approved.")
    expect(row(mine, request["id"]).locator(".approvals")).to_have_text("1 of 2 approved — by olivia")
    expect(row(theirs, request["id"]).locator(".approvals")).to_have_text("1 of 2 approved — by olivia")

    row(theirs, request["id"]).locator(".pick").check()
    theirs.get_by_role("button", name="Approve selected").click()
    expect(theirs.locator("#bulk-result")).to_have_text("0 of 1 approved.")
    item = row(theirs, request["id"])
    expect(item.locator(".result")).to_contain_text("Approve this request on its own")
    expect(item.locator(".approvals")).to_have_text("1 of 2 approved — by olivia")
    assert read(live.url, agent, request["id"])["status"] == "pending"

    item.locator("button.approve").click()
    expect(row(theirs, request["id"])).to_have_count(0)
    final = read(live.url, agent, request["id"])
    assert final["status"] == "approved" and [a["by"] for a in final["approvals"]] == ["olivia", "oscar"]


def test_a_payload_another_approver_changed_is_reviewed_on_its_page_never_approved_from_the_queue(
        live, open_page, operator, second_operator, agent):
    """olivia approves with changes on the request's page; oscar's open queues (a row that
    arrived live, and one the server rendered) turn, live, to a mark and a link to the
    page, with no Approve: the queue shows no payload, so it approves none changed."""
    quorum_policy()
    arrived = open_page(live.url, "oscar")
    wait_live(arrived)
    request = submit(live.url, agent, "Drop the staging database", operation="drop-db", payload={"rows": 10})
    expect(row(arrived, request["id"]).locator("button.approve")).to_be_visible()
    served = open_page(live.url, "oscar")
    wait_live(served)
    expect(row(served, request["id"]).locator("button.approve")).to_be_visible()
    expect(row(served, request["id"]).locator(".changed")).to_be_hidden()

    page = open_page(live.url, "olivia", f"/requests/{request['id']}/")
    page.get_by_text("Approve with changes to the payload").click()
    page.locator("#payload-editor").fill('{"rows": 100000}')
    page.locator("#approve-button").click()
    page.locator("#approve-button").click()  # the changes seen: approve
    expect(page.locator("#approvals")).to_have_text("1 of 2 approved — by olivia")

    for queue in (arrived, served):
        item = row(queue, request["id"])
        expect(item.locator(".changed")).to_have_text("Payload changed by olivia — review it on the request's page")
        expect(item.get_by_role("link", name="Review the change")).to_have_attribute(
            "href", f"/requests/{request['id']}/")
        expect(item.locator("button.approve")).to_be_hidden()
        expect(item.locator("button.reject")).to_be_visible()
        # The keyboard's approve does nothing to it either.
        item.focus()
        queue.keyboard.press("j")
        queue.keyboard.press("a")
        expect(item.locator(".result")).to_have_text("")
    screenshot(arrived, "queue-payload-changed.png")
    assert read(live.url, agent, request["id"])["status"] == "pending"
    served.reload()
    expect(row(served, request["id"]).locator(".changed")).to_contain_text("Payload changed by olivia")
    expect(row(served, request["id"]).locator("button.approve")).to_have_count(0)

    # Where the change is shown, oscar approves it.
    row(served, request["id"]).get_by_role("link", name="Review the change").click()
    expect(served.locator("#edited-payload")).to_contain_text("100000")
    served.locator("#approve-button").click()
    expect(served.locator("#status")).to_have_text("approved")
    final = read(live.url, agent, request["id"])
    assert final["decision"]["payload"] == {"rows": 100000} and final["payload_changed_by"] == "olivia"
    assert [a["by"] for a in final["approvals"]] == ["olivia", "oscar"]
