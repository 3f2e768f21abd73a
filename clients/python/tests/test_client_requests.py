import time
import uuid
from datetime import UTC

import pytest

from oversight_client import (
    AlreadyDecided,
    Client,
    IdempotencyConflict,
    NotFound,
    OversightRequest,
    TimedOut,
    Trigger,
    Unauthenticated,
    ValidationError,
)

CALM = {"memory_pressure": 12.5, "delegation_depth": 1, "circular_refs": 0}
HOT = {"memory_pressure": 85, "delegation_depth": 1, "circular_refs": 0}


def test_it_submits_and_returns_a_typed_request(client, fake):
    request = client.submit("file_write", "Write the report", payload={"path": "/tmp/r.txt"},
                            metrics=CALM)

    assert isinstance(request, OversightRequest)
    assert request.approved and request.final and not request.critical
    assert request.decision.source == "policy"
    assert request.payload == {"path": "/tmp/r.txt"}
    assert request.created_at.tzinfo == UTC
    assert request.deadline > request.created_at
    assert all(isinstance(t, Trigger) for t in request.triggers)
    call = fake.calls_to("POST", "/api/v1/requests")[0]
    assert call.headers["authorization"] == f"Bearer {fake.api_key}"
    assert call.headers["content-type"] == "application/json"
    assert uuid.UUID(call.body["idempotency_key"]).version == 4
    assert "timeout_seconds" not in call.body and "callback_url" not in call.body


def test_it_sends_the_optional_fields_it_is_given(client, fake):
    client.submit("delegate", "Delegate", timeout_seconds=60,
                  callback_url="http://127.0.0.1:9/hook", idempotency_key="run-42-step-7",
                  metrics=CALM)

    body = fake.submitted()[0]
    assert body["timeout_seconds"] == 60
    assert body["callback_url"] == "http://127.0.0.1:9/hook"
    assert body["idempotency_key"] == "run-42-step-7"


def test_it_shows_a_request_over_a_threshold_as_pending(client):
    request = client.submit("delegate", "Delegate scraping", metrics=HOT)

    assert request.critical and request.status == "pending"
    assert not request.approved and not request.final and request.decision is None
    fired = [t.rule for t in request.triggers if t.fired]
    assert fired == ["memory_pressure"]


def test_it_long_polls_until_an_operator_decides(client, fake):
    request = client.submit("delegate", "Delegate scraping", metrics=HOT)
    fake.decide_next("delegate", "approved", after=0.3)

    started = time.monotonic()
    final = client.wait(request.id, timeout=10)

    assert final.approved and final.decision.by == "alice"
    assert time.monotonic() - started < 3
    polls = fake.calls_to("GET", f"/api/v1/requests/{request.id}")
    assert len(polls) == 1  # held by the server, not polled in a loop
    assert 0 < int(polls[0].query["wait"]) <= 10


def test_it_waits_in_slices_of_at_most_55_seconds(client, fake):
    fake.hold = False  # answers at once, so each slice shows up as one call
    fake.poll_after_ms = 10
    request = client.submit("delegate", "Delegate", metrics=HOT)
    path = f"/api/v1/requests/{request.id}"
    fake.decide_when(lambda: request.id if len(fake.calls_to("GET", path)) >= 3 else None,
                     "approved", after=0)

    final = client.wait(request.id, timeout=600)

    assert final.approved
    waits = [int(call.query["wait"]) for call in fake.calls_to("GET", path)]
    assert len(waits) >= 3
    assert max(waits) == 55


def test_it_returns_a_rejection_from_wait_without_raising(client, fake):
    request = client.submit("delegate", "Delegate", metrics=HOT)
    fake.decide(request.id, "rejected", "not now")

    final = client.wait(request.id, timeout=5)

    assert final.status == "rejected" and final.reason == "not now"


def test_it_gives_up_waiting_with_timed_out(client):
    request = client.submit("delegate", "Delegate", metrics=HOT)

    started = time.monotonic()
    with pytest.raises(TimedOut) as caught:
        client.wait(request.id, timeout=0.5)

    assert 0.5 <= time.monotonic() - started < 2
    assert caught.value.request.id == request.id
    assert caught.value.request.status == "pending"


def test_it_cancels_a_pending_request(client, fake):
    request = client.submit("delegate", "Delegate", metrics=HOT)

    cancelled = client.cancel(request.id)

    assert cancelled.status == "cancelled" and cancelled.decision.source == "agent"
    assert fake.requests[request.id]["status"] == "cancelled"


def test_it_treats_cancelling_twice_as_done(client):
    request = client.submit("delegate", "Delegate", metrics=HOT)
    client.cancel(request.id)

    again = client.cancel(request.id)

    assert again.status == "cancelled"


def test_it_raises_already_decided_when_cancelling_a_decided_request(client):
    request = client.submit("file_write", "Write", metrics=CALM)

    with pytest.raises(AlreadyDecided) as caught:
        client.cancel(request.id)

    assert caught.value.status == 409 and caught.value.code == "already_decided"
    assert caught.value.request.approved


def test_it_lists_every_page_following_the_cursor(client, fake):
    ids = [client.submit("scrape", f"page {n}", metrics=CALM).id for n in range(7)]

    listed = list(client.list(limit=3))

    assert [r.id for r in listed] == list(reversed(ids))
    pages = fake.calls_to("GET", "/api/v1/requests")
    assert [p.query.get("cursor") for p in pages] == [None, "3", "6"]
    assert all(p.query["limit"] == "3" for p in pages)


def test_it_filters_the_list_by_status_and_operation(client):
    client.submit("scrape", "calm", metrics=CALM)
    hot = client.submit("scrape", "hot", metrics=HOT)
    client.submit("file_write", "hot elsewhere", metrics=HOT)

    listed = list(client.list(status="pending", operation="scrape"))

    assert [r.id for r in listed] == [hot.id]


def test_it_pushes_memory_samples(client, fake):
    sample = {"at": "2026-11-25T10:00:00.123Z", "pid": 1, "process": "agent", "rss_bytes": 1,
              "vms_bytes": 2, "gc": {"collected": 0, "uncollectable": 0}, "cycles_found": 0,
              "tracemalloc_top": []}

    client.push_metrics("host-a", [sample])

    assert fake.pushes == [{"host": "host-a", "samples": [sample]}]


def test_it_raises_validation_errors_with_the_servers_details(client):
    with pytest.raises(ValidationError) as caught:
        client.submit("Not An Operation", "")

    error = caught.value
    assert error.status == 400 and error.code == "validation_error"
    assert set(error.details) == {"operation", "summary"}


def test_it_raises_not_found_for_an_unknown_request(client):
    with pytest.raises(NotFound):
        client.get(str(uuid.uuid4()))


def test_it_raises_unauthenticated_for_a_wrong_key(fake):
    with Client(fake.url, "wrong-key") as wrong, pytest.raises(Unauthenticated) as caught:
        wrong.submit("scrape", "x")

    assert caught.value.status == 401


def test_it_raises_idempotency_conflict_for_a_key_reused_with_another_body(client):
    client.submit("scrape", "first", idempotency_key="k-1", metrics=CALM)

    with pytest.raises(IdempotencyConflict):
        client.submit("scrape", "second", idempotency_key="k-1", metrics=CALM)


def test_it_returns_the_first_request_for_a_repeated_key_and_body(client, fake):
    first = client.submit("scrape", "same", idempotency_key="k-2", metrics=CALM)
    again = client.submit("scrape", "same", idempotency_key="k-2", metrics=CALM)

    assert again.id == first.id
    assert len(fake.requests) == 1


def test_it_reads_url_and_key_from_the_environment(fake, monkeypatch):
    monkeypatch.setenv("OVERSIGHT_URL", fake.url + "/")
    monkeypatch.setenv("OVERSIGHT_API_KEY", fake.api_key)

    with Client() as from_env:
        assert from_env.url == fake.url
        assert from_env.submit("scrape", "x", metrics=CALM).approved


def test_it_defaults_to_the_local_server(monkeypatch):
    monkeypatch.delenv("OVERSIGHT_URL", raising=False)

    with Client(api_key="k") as local:
        assert local.url == "http://127.0.0.1:8000"


def test_it_refuses_to_start_without_an_api_key(monkeypatch):
    monkeypatch.delenv("OVERSIGHT_API_KEY", raising=False)

    with pytest.raises(ValueError, match="OVERSIGHT_API_KEY"):
        Client("http://127.0.0.1:8000")


def test_it_refuses_a_wait_longer_than_the_server_holds(client):
    with pytest.raises(ValueError, match="55"):
        client.get("x", wait=56)
