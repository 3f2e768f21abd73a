"""Reading, listing and cancelling requests; openapi.json; the agent commands."""

import uuid
from datetime import timedelta

import pytest
import time_machine
from django.core.management import call_command
from django.utils import timezone

from oversight import actions
from oversight.models import OversightRequest, Source, Status
from tests.conftest import past_deadline
from tests.oversight.api_helpers import error_code, get, post, submit

pytestmark = pytest.mark.django_db(transaction=True)


def test_it_reads_its_own_request(client, agent):
    created = submit(client, agent, metrics={"delegation_depth": 5}).json()
    response = get(client, f"/api/v1/requests/{created['id']}", agent)
    assert response.status_code == 200 and response.json() == created


def test_an_agent_never_sees_another_agents_request(client, agent, other_agent):
    created = submit(client, agent).json()
    assert get(client, f"/api/v1/requests/{created['id']}", other_agent).status_code == 404
    response = post(client, f"/api/v1/requests/{created['id']}/cancel", other_agent)
    assert response.status_code == 404 and error_code(response) == "not_found"
    assert get(client, "/api/v1/requests", other_agent).json()["results"] == []


@pytest.mark.parametrize("request_id", [str(uuid.uuid4()), "not-a-uuid", "1"])
def test_an_unknown_id_is_404(client, agent, request_id):
    response = get(client, f"/api/v1/requests/{request_id}", agent)
    assert response.status_code == 404 and error_code(response) == "not_found"


def test_a_read_past_the_deadline_returns_and_persists_the_timeout(client, agent, short_timeouts):
    created = submit(client, agent, metrics={"delegation_depth": 5}, timeout_seconds=30).json()
    req = past_deadline(OversightRequest.objects.get(id=created["id"]))
    # This process's clock a day behind: the database's clock decides (spec §9.1).
    with time_machine.travel(timezone.now() - timedelta(days=1), tick=False):
        body = get(client, f"/api/v1/requests/{created['id']}", agent).json()
    assert body["status"] == "approved"
    assert body["decision"]["source"] == "timeout" and body["decision"]["by"] is None
    req.refresh_from_db()
    assert req.decision_source == Source.TIMEOUT


def test_cancel_while_pending_then_409(client, agent):
    created = submit(client, agent, metrics={"delegation_depth": 5}).json()
    response = post(client, f"/api/v1/requests/{created['id']}/cancel", agent)
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "cancelled" and body["decision"]["source"] == "agent" and body["decision"]["by"] == agent.name
    again = post(client, f"/api/v1/requests/{created['id']}/cancel", agent)
    assert again.status_code == 409 and error_code(again) == "already_decided"
    assert again.json()["error"]["details"]["request"]["status"] == "cancelled"


def test_cancel_after_an_operator_decided_tells_who_won(client, agent):
    created = submit(client, agent, metrics={"delegation_depth": 5}).json()
    actions.do_decide(created["id"], outcome=Status.APPROVED, source=Source.OPERATOR, by="olivia")
    response = post(client, f"/api/v1/requests/{created['id']}/cancel", agent)
    assert response.status_code == 409
    assert "olivia" in response.json()["error"]["message"]


def test_the_list_is_newest_first_and_pages_with_a_cursor(client, agent):
    ids = [submit(client, agent, summary=f"n{i}").json()["id"] for i in range(7)]
    seen, cursor = [], None
    while True:
        path = "/api/v1/requests?limit=3" + (f"&cursor={cursor}" if cursor else "")
        page = get(client, path, agent).json()
        seen += [r["id"] for r in page["results"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))


def test_the_list_filters_by_status_and_operation(client, agent):
    submit(client, agent, operation="scrape")
    pending = submit(client, agent, operation="delegate", metrics={"delegation_depth": 9}).json()
    only = get(client, "/api/v1/requests?status=pending", agent).json()["results"]
    assert [r["id"] for r in only] == [pending["id"]]
    scrapes = get(client, "/api/v1/requests?operation=scrape", agent).json()["results"]
    assert [r["operation"] for r in scrapes] == ["scrape"]


@pytest.mark.parametrize("query", ["limit=0", "limit=101", "limit=x", "status=done", "cursor=%%%", "cursor=bm9wZQ"])
def test_the_list_rejects_bad_parameters(client, agent, query):
    response = get(client, f"/api/v1/requests?{query}", agent)
    assert response.status_code == 400 and error_code(response) == "validation_error"


@pytest.mark.parametrize("wait", ["-1", "56", "soon"])
def test_wait_is_bounded(client, agent, wait):
    created = submit(client, agent).json()
    response = get(client, f"/api/v1/requests/{created['id']}?wait={wait}", agent)
    assert response.status_code == 400 and "wait" in response.json()["error"]["details"]


def test_openapi_describes_every_endpoint_from_the_validating_models(client):
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    doc = response.json()
    assert doc["openapi"].startswith("3.")
    assert set(doc["paths"]) == {
        "/api/v1/requests", "/api/v1/requests/{id}", "/api/v1/requests/{id}/cancel", "/api/v1/metrics",
        "/api/v1/openapi.json", "/api/v1/requests/{id}/receipt", "/api/v1/keys",
    }
    submit_schema = doc["components"]["schemas"]["SubmitRequest"]
    assert submit_schema["properties"]["operation"]["pattern"] == "^[a-z0-9][a-z0-9_.-]{0,63}$"
    assert submit_schema["properties"]["summary"]["maxLength"] == 500
    assert set(submit_schema["required"]) == {"operation", "summary"}
    assert "413" in doc["paths"]["/api/v1/requests"]["post"]["responses"]


def test_metrics_push_is_validated_and_stored(client, agent):
    from monitoring.models import AgentSample

    sample = {"at": "2026-11-25T10:00:00.000Z", "pid": 41, "process": "agent", "rss_bytes": 1000, "vms_bytes": 2000,
              "gc": {"collected": 3, "uncollectable": 0}, "cycles_found": 2,
              "tracemalloc_top": [{"where": "a.py:1", "size_bytes": 10, "count": 1}]}
    response = post(client, "/api/v1/metrics", agent, json={"host": "box-1", "samples": [sample]})
    assert response.status_code == 202 and response.json() == {"accepted": 1}
    row = AgentSample.objects.get()
    assert (row.host, row.pid, row.rss_bytes, row.cycles_found, row.gc_collected) == ("box-1", 41, 1000, 2, 3)
    bad = post(client, "/api/v1/metrics", agent, json={"host": "box-1", "samples": [sample | {"rss_bytes": -1}]})
    assert bad.status_code == 400 and "samples.0.rss_bytes" in bad.json()["error"]["details"]
    bad_time = post(client, "/api/v1/metrics", agent, json={"host": "box-1", "samples": [sample | {"at": "yesterday"}]})
    assert bad_time.status_code == 400
    assert post(client, "/api/v1/metrics", None, json={}).status_code == 401
    assert AgentSample.objects.count() == 1


def test_create_agent_prints_the_key_last_and_it_works(client, capsys):
    call_command("create_agent", "batch-1")
    key = capsys.readouterr().out.strip().splitlines()[-1]
    response = post(client, "/api/v1/requests", None, json={"operation": "x", "summary": "s"},
                    headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 201 and response.json()["agent"] == "batch-1"
    call_command("revoke_agent", "batch-1")
    assert capsys.readouterr().out.strip() == "Revoked 1 key(s) of 'batch-1'."
    again = post(client, "/api/v1/requests", None, json={"operation": "x", "summary": "s"},
                 headers={"Authorization": f"Bearer {key}"})
    assert again.status_code == 401
