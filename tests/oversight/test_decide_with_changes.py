"""Approving with an edited payload, and a note to the agent with either outcome."""

from __future__ import annotations

import json

import jwt
import pytest
from django.test import Client

from oversight import actions, receipts
from oversight.diffs import json_changes
from oversight.models import AuditEvent, Status

pytestmark = pytest.mark.django_db(transaction=True)  # the API reads from a thread of its own

JSON = {"Accept": "application/json"}
SUBMITTED = {"url": "https://example.org", "depth": 5, "headers": {"ua": "bot"}}


@pytest.fixture
def pending(agent):
    submission = actions.Submission(
        operation="delegate", summary="Scrape", payload=SUBMITTED, metrics={"memory_pressure": 91.0}
    )
    return actions.do_submit(agent.agent, submission)[0]


def decide(client, req, **data):
    return client.post(f"/requests/{req.id}/decide", data, headers=JSON)


def api_read(agent, req) -> dict:
    """What the agent reads, from a client of its own (no operator's session)."""
    return Client().get(f"/api/v1/requests/{req.id}", headers=agent.headers).json()


def test_it_approves_with_an_edited_payload_and_a_note(client, operator, agent, pending):
    client.force_login(operator)
    edited = {"url": "https://example.org", "depth": 2, "headers": {"ua": "bot", "from": "ops"}}
    response = decide(client, pending, outcome="approve", payload=json.dumps(edited), note=" Depth 2 is plenty ")
    assert response.status_code == 200
    decision = response.json()["request"]["decision"]
    assert decision["payload"] == edited and decision["note"] == "Depth 2 is plenty"
    # The agent reads the same: the payload it may run, beside the one it asked with.
    resource = api_read(agent, pending)
    assert resource["decision"]["payload"] == edited and resource["payload"] == SUBMITTED
    event = pending.events.get(kind=AuditEvent.Kind.DECIDED)
    assert event.data["note"] == "Depth 2 is plenty"
    assert event.data["payload_changes"] == [
        {"op": "replace", "path": "/depth", "from": 5, "to": 2},
        {"op": "add", "path": "/headers/from", "to": "ops"},
    ]


def test_an_unchanged_payload_is_no_change(client, operator, agent, pending):
    client.force_login(operator)
    same = json.dumps(dict(reversed(SUBMITTED.items())), indent=2)
    decision = decide(client, pending, outcome="approve", payload=same).json()["request"]["decision"]
    assert "payload" not in decision and decision["note"] == ""
    assert "payload_changes" not in pending.events.get(kind=AuditEvent.Kind.DECIDED).data


def test_a_reject_carries_its_note_to_the_agent(client, operator, agent, pending):
    client.force_login(operator)
    response = decide(client, pending, outcome="reject", reason="Too deep", note="Retry with depth ≤ 2")
    assert response.status_code == 200
    decision = api_read(agent, pending)["decision"]
    assert (decision["outcome"], decision["reason"], decision["note"]) == ("rejected", "Too deep", "Retry with depth ≤ 2")
    assert "payload" not in decision


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"outcome": "approve", "payload": "{not json"}, "not valid JSON"),
        ({"outcome": "approve", "payload": "[1, 2]"}, "must be a JSON object"),
        ({"outcome": "approve", "payload": '{"n": NaN}'}, "not valid JSON"),
        ({"outcome": "approve", "payload": json.dumps({"x": "y" * 70_000})}, "over 64 KiB"),
        ({"outcome": "reject", "reason": "no", "payload": '{"a": 1}'}, "Only an approval"),
        ({"outcome": "approve", "note": "n" * 2001}, "at most 2,000 characters"),
    ],
)
def test_bad_changes_are_a_400_and_the_request_stays_pending(client, operator, pending, fields, message):
    client.force_login(operator)
    response = decide(client, pending, **fields)
    assert response.status_code == 400
    assert message in response.json()["error"]["message"]
    pending.refresh_from_db()
    assert pending.status == Status.PENDING


def test_a_bulk_decision_never_edits_payloads_but_carries_a_note(client, operator, agent, pending):
    client.force_login(operator)
    response = client.post(
        "/requests/decide", {"ids": [str(pending.id)], "outcome": "approve", "payload": '{"a": 1}'}, headers=JSON
    )
    assert response.status_code == 400
    pending.refresh_from_db()
    assert pending.status == Status.PENDING
    response = client.post(
        "/requests/decide", {"ids": [str(pending.id)], "outcome": "approve", "note": "All fine"}, headers=JSON
    )
    assert response.status_code == 200
    assert response.json()["results"][0]["request"]["decision"]["note"] == "All fine"


def test_the_openapi_document_describes_the_new_decision_fields(client):
    schema = client.get("/api/v1/openapi.json").json()
    decision = schema["components"]["schemas"]["Decision"]["properties"]
    assert {"note", "payload"} <= decision.keys()


def test_changes_are_listed_by_json_pointer():
    assert json_changes({"a/b": 1, "l": [1]}, {"a/b": 1, "l": [1, 2], "x": None}) == [
        {"op": "replace", "path": "/l", "from": [1], "to": [1, 2]},
        {"op": "add", "path": "/x", "to": None},
    ]
    assert json_changes({"n": 1}, {"n": 1.0}) == [{"op": "replace", "path": "/n", "from": 1, "to": 1.0}]
    assert json_changes({"k": {"~": 1}}, {"k": {}}) == [{"op": "remove", "path": "/k/~0", "from": 1}]


EDITED_REFUSED = [
    ('{"url": "a", "n": 9007199254740993}', "payload.n", "±2^53"),
    ('{"url": "a", "n": -9007199254740993}', "payload.n", "±2^53"),
    ('{"url": "a", "s": "\\udfff"}', "payload", "surrogate"),
    ('{"url": "a", "s": "\\u0000"}', "payload", "NUL"),
    ('{"url": "a", "\\u0000": 1}', "payload", "NUL"),
    ('{"url": "a", "n": 1e999}', "payload", "not valid JSON"),
    ('{"url": "a", "n": -1e999}', "payload", "not valid JSON"),
    ('{"url": "a", "n": NaN}', "payload", "not valid JSON"),
    ('{"url": "a", "n": Infinity}', "payload", "not valid JSON"),
    ('{"url": "a", "url": "b"}', "payload", "duplicate key"),
    ('{"url": "a", "h": {"k": 1, "k": 2}}', "payload", "duplicate key"),
]


@pytest.mark.parametrize(("text", "field", "why"), EDITED_REFUSED)
def test_an_edited_payload_is_held_to_what_a_submission_is(client, operator, agent, pending, text, field, why):
    """The edited payload is parsed as a submission's payload is: each of these is a
    400 `validation_error` naming the field, and the request stays pending."""
    client.force_login(operator)
    response = decide(client, pending, outcome="approve", payload=text)
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert field in error["details"] and why in " ".join(error["details"][field]), error
    assert "payload" in error["message"]
    pending.refresh_from_db()
    assert pending.status == Status.PENDING and pending.decision_payload is None
    # The same payload submitted by an agent is refused too, naming the same field.
    body = '{"operation": "delegate", "summary": "s", "payload": ' + text + "}"
    submitted = Client().post("/api/v1/requests", body, content_type="application/json", headers=agent.headers)
    assert submitted.status_code == 400


@pytest.mark.parametrize(("text", "field", "why"), EDITED_REFUSED)
def test_the_page_shows_a_bad_edited_payload_as_a_form_error(client, operator, pending, text, field, why):
    client.force_login(operator)
    response = client.post(f"/requests/{pending.id}/decide", {"outcome": "approve", "payload": text})
    assert response.status_code == 400
    assert b"payload" in response.content and b"Something went wrong" not in response.content
    pending.refresh_from_db()
    assert pending.status == Status.PENDING



@pytest.mark.parametrize(("submitted", "edited"), [
    ({"recursive": 0}, {"recursive": False}),
    ({"force": 1}, {"force": True}),
    ({"force": True}, {"force": 1.0}),
])
def test_an_edit_that_python_thinks_equal_is_still_a_change(client, operator, agent, submitted, edited):
    """`0 == False` and `1 == True` in Python, not in JSON: the agent gets the payload the
    operator wrote, and the receipt signs it."""
    submission = actions.Submission(
        operation="delegate", summary="Scrape", payload=submitted, metrics={"memory_pressure": 91.0}
    )
    req = actions.do_submit(agent.agent, submission)[0]
    client.force_login(operator)
    decision = decide(client, req, outcome="approve", payload=json.dumps(edited)).json()["request"]["decision"]
    read = api_read(agent, req)["decision"]
    assert json.dumps(decision.get("payload")) == json.dumps(read.get("payload")) == json.dumps(edited)
    claims = jwt.decode(read["receipt"], options={"verify_signature": False})
    assert claims["payload_sha256"] == receipts.payload_digest(edited) != receipts.payload_digest(submitted)


def _editor_text(page) -> str:
    import html
    import re

    return html.unescape(re.search(r'<textarea id="payload-editor"[^>]*>(.*?)</textarea>', page, re.S).group(1))


def test_under_a_quorum_the_next_approver_sees_and_approves_the_payload_as_it_stands(
    client, operator, second_operator, agent
):
    """An approval with changes leaves the request pending for a second approver: the page
    shows them the edited payload, the one their approval completes the quorum on."""
    actions.do_change_policy("*", {"required_approvals": 2, "timeout_action": "reject"}, by="maria")
    submission = actions.Submission(
        operation="delegate", summary="Scrape", payload={"rows": 10}, metrics={"memory_pressure": 91.0}
    )
    req = actions.do_submit(agent.agent, submission)[0]
    client.force_login(second_operator)
    assert decide(client, req, outcome="approve", payload='{"rows": 100000}').json()["request"]["status"] == "pending"
    client.force_login(operator)
    page = client.get(f"/requests/{req.id}/").content.decode()
    assert json.loads(_editor_text(page)) == {"rows": 100000}
    assert "100000" in page.split('id="payload-title"')[1]  # beside the payload submitted
    assert f'id="edited-by">{second_operator.username} approved with changes' in page  # and who changed it
    # The form as the page has it: the approval completes the quorum on what it showed.
    done = decide(client, req, outcome="approve", payload=_editor_text(page)).json()["request"]
    assert done["status"] == "approved" and done["decision"]["payload"] == {"rows": 100000}
    assert [a["by"] for a in done["approvals"]] == [second_operator.username, operator.username]


def test_under_a_quorum_an_edit_back_to_the_submitted_payload_is_a_change(client, operator, second_operator, agent):
    actions.do_change_policy("*", {"required_approvals": 2, "timeout_action": "reject"}, by="maria")
    submission = actions.Submission(
        operation="delegate", summary="Scrape", payload={"rows": 10}, metrics={"memory_pressure": 91.0}
    )
    req = actions.do_submit(agent.agent, submission)[0]
    client.force_login(second_operator)
    decide(client, req, outcome="approve", payload='{"rows": 100000}')
    client.force_login(operator)
    back = decide(client, req, outcome="approve", payload='{"rows": 10}').json()["request"]
    # Not a second approval of 100000: the first one is discarded, and nothing is edited now.
    assert back["status"] == "pending" and [a["by"] for a in back["approvals"]] == [operator.username]
    client.force_login(second_operator)
    done = decide(client, req, outcome="approve").json()["request"]
    assert done["status"] == "approved" and "payload" not in done["decision"]
    claims = jwt.decode(done["decision"]["receipt"], options={"verify_signature": False})
    assert claims["payload_sha256"] == receipts.payload_digest({"rows": 10})


def _queue_row(page: str, req) -> str:
    return page.split(f'data-id="{req.id}"')[1].split('<p class="result"')[0]


def test_the_queue_offers_no_approve_for_a_payload_another_approver_changed(client, operator, agent):
    """The queue shows no payload: its Approve would approve another approver's edit
    unseen. That row names who changed it and links to the request's page instead; Reject
    stays, and the other rows keep their Approve."""
    from tests.conftest import _person

    actions.do_change_policy("*", {"required_approvals": 2, "timeout_action": "reject"}, by="maria")
    # A name is text someone chose: shown escaped, unseen characters too.
    editor = _person("<i>ed\u202e", "operators")

    def ask(rows):
        submission = actions.Submission("delegate", "Scrape", {"rows": rows}, {"memory_pressure": 91.0})
        return actions.do_submit(agent.agent, submission)[0]

    edited, untouched, approved = ask(10), ask(20), ask(30)
    client.force_login(editor)
    decide(client, edited, outcome="approve", payload='{"rows": 100000}')
    decide(client, approved, outcome="approve")
    client.force_login(operator)
    page = client.get("/queue/").content.decode()

    row = _queue_row(page, edited)
    assert "Payload changed by <span class=\"changed-by\">&lt;i&gt;ed\\u202e</span> — review it on the request" in row
    assert f'<a class="review" href="/requests/{edited.id}/">Review the change</a>' in row
    assert "approve-form" not in row and 'class="decide reject-form"' in row
    for other in (untouched, approved):
        row = _queue_row(page, other)
        assert '<p class="changed" hidden>' in row and 'class="review"' not in row
        assert 'class="decide approve-form"' in row and 'class="decide reject-form"' in row


TROJAN = {"cmd": "ls \u202e/ fr- mr", "name": "a\u200bb\u2066c", "c1": "x\u0085y", "tag": "t\U000e0041"}


def test_the_page_shows_invisible_and_bidi_characters_of_a_payload_as_escapes(client, operator, agent):
    """A right-to-left override in a payload would show the operator text other than what
    runs: every format, control or separator character is shown as its JSON escape,
    which reads back as the same payload."""
    submission = actions.Submission(
        operation="delegate", summary="Scrape", payload=TROJAN, metrics={"memory_pressure": 91.0}
    )
    req = actions.do_submit(agent.agent, submission)[0]
    client.force_login(operator)
    page = client.get(f"/requests/{req.id}/").content.decode()
    for char in "\u202e\u200b\u2066\u0085\U000e0041":
        assert char not in page
    assert "\\u202e" in page.split('id="payload-title"')[1]
    assert json.loads(_editor_text(page)) == TROJAN
    decision = decide(client, req, outcome="approve", payload=_editor_text(page)).json()["request"]["decision"]
    assert "payload" not in decision


def test_the_pages_show_invisible_and_bidi_characters_of_a_summary_as_escapes(client, operator, agent):
    submission = actions.Submission(
        operation="delegate", summary="Tidy \u202eredun\u200b", payload={}, metrics={"memory_pressure": 91.0, "x\u202ey": 1}
    )
    req = actions.do_submit(agent.agent, submission)[0]
    client.force_login(operator)
    for path in (f"/requests/{req.id}/", "/queue/", "/history/?status=pending"):
        page = client.get(path).content.decode()
        assert "\u202e" not in page and "\u200b" not in page, path
    assert "Tidy \\u202eredun\\u200b" in client.get("/queue/").content.decode()
