"""POST /api/v1/requests: the resource, the error matrix, idempotency."""

import threading

import pytest
from django.db import close_old_connections

from oversight.models import ApiKey, AuditEvent, OversightRequest
from tests.oversight.api_helpers import error_code, get, post, submit

pytestmark = pytest.mark.django_db(transaction=True)


def test_it_approves_a_non_critical_request_at_once(client, agent):
    response = submit(client, agent, metrics={"memory_pressure": 42.0})
    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "approved" and body["critical"] is False
    assert body["decision"]["source"] == "policy" and body["decision"]["by"] is None
    assert body["agent"] == "scraper-7"
    assert body["policy"] == {"operation": "*", "version": 1}


def test_it_queues_a_critical_request_with_a_deadline(client, agent):
    response = submit(client, agent, metrics={"memory_pressure": 83.5, "delegation_depth": 5, "circular_refs": 1},
                      timeout_seconds=120, payload={"url": "https://example.org", "depth": 5})
    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "pending" and body["critical"] is True and body["decision"] is None
    assert [t["fired"] for t in body["triggers"]] == [True, True, False]
    assert body["timeout_action"] == "approve" and body["poll_after_ms"] == 1000
    assert body["created_at"].endswith("Z") and len(body["created_at"]) == len("2026-11-25T10:00:00.123Z")
    req = OversightRequest.objects.get(id=body["id"])
    assert (req.deadline - req.created_at).total_seconds() == 120
    assert body["payload"] == {"url": "https://example.org", "depth": 5}
    kinds = list(AuditEvent.objects.filter(request=req).values_list("kind", flat=True))
    assert kinds == ["submitted", "evaluated"]


def test_it_keeps_other_numeric_metrics_and_drops_nulls(client, agent):
    body = submit(client, agent, metrics={"delegation_depth": None, "tokens": 1200, "host": "box-1"}).json()
    assert body["metrics"] == {"tokens": 1200, "host": "box-1"}


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"operation": "Bad Op"}, "operation"),
        ({"operation": ""}, "operation"),
        ({"operation": "a" * 65}, "operation"),
        ({"summary": ""}, "summary"),
        ({"summary": "   "}, "summary"),
        ({"summary": "x" * 501}, "summary"),
        ({"summary": 5}, "summary"),
        ({"payload": [1, 2]}, "payload"),
        ({"metrics": {"memory_pressure": 101}}, "metrics.memory_pressure"),
        ({"metrics": {"memory_pressure": -1}}, "metrics.memory_pressure"),
        ({"metrics": {"memory_pressure": True}}, "metrics.memory_pressure"),
        ({"metrics": {"memory_pressure": "83"}}, "metrics.memory_pressure"),
        ({"metrics": {"delegation_depth": 2.5}}, "metrics.delegation_depth"),
        ({"metrics": {"delegation_depth": -1}}, "metrics.delegation_depth"),
        ({"metrics": {"circular_refs": False}}, "metrics.circular_refs"),
        ({"metrics": {"host": "h" * 256}}, "metrics.host"),
        ({"metrics": {"tokens": "many"}}, "metrics"),
        ({"metrics": {"tokens": True}}, "metrics"),
        ({"metrics": [1]}, "metrics"),
        ({"timeout_seconds": 0}, "timeout_seconds"),
        ({"timeout_seconds": 301}, "timeout_seconds"),
        ({"timeout_seconds": 1.5}, "timeout_seconds"),
        ({"timeout_seconds": True}, "timeout_seconds"),
        ({"callback_url": "ftp://x.example/"}, "callback_url"),
        ({"callback_url": "not a url"}, "callback_url"),
        ({"callback_url": "http://x.example:99999/"}, "callback_url"),
        ({"idempotency_key": ""}, "idempotency_key"),
        ({"unexpected": 1}, "unexpected"),
    ],
)
def test_it_rejects_bad_fields_naming_them(client, agent, fields, field):
    response = submit(client, agent, **fields)
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert any(key == field or key.startswith(field + ".") for key in error["details"]), error["details"]
    assert not OversightRequest.objects.exists()


def test_it_requires_operation_and_summary(client, agent):
    response = post(client, "/api/v1/requests", agent, json={})
    assert response.status_code == 400
    assert set(response.json()["error"]["details"]) == {"operation", "summary"}


@pytest.mark.parametrize(
    "raw",
    [
        b"{",
        b'{"operation": "x", "summary": NaN}',
        b'{"summary": Infinity}',
        b"\xff\xfe{}",
        b'{"summary": "' + b"\xc3\x28" + b'"}',
        b"[" * 100_000 + b"]" * 100_000,
        b'{"n": ' + b"9" * 5000 + b"}",
        b" ",
    ],
)
def test_it_answers_malformed_json_with_400(client, agent, raw):
    response = post(client, "/api/v1/requests", agent, data=raw)
    assert response.status_code == 400
    assert error_code(response) == "malformed_json"


@pytest.mark.parametrize(
    "body",
    [[], "text", 5, None, {"operation": "x", "summary": "s", "payload": {"a": [[[[[[[[[[[]]]]]]]]]]]}, "metrics": {"memory_pressure": 1e308}}],
)
def test_odd_but_valid_json_never_gives_a_500(client, agent, body):
    response = post(client, "/api/v1/requests", agent, json=body)
    assert response.status_code in (201, 400)
    assert response["Content-Type"] == "application/json"


def test_it_needs_a_key(client, agent):
    response = post(client, "/api/v1/requests", None, json={"operation": "x", "summary": "s"})
    assert response.status_code == 401 and error_code(response) == "unauthenticated"
    response = post(client, "/api/v1/requests", None, json={}, headers={"Authorization": "Bearer ovs_nope"})
    assert response.status_code == 401
    response = post(client, "/api/v1/requests", None, json={}, headers={"Authorization": f"Basic {agent.key}"})
    assert response.status_code == 401


def test_a_revoked_key_is_refused(client, agent):
    from django.core.management import call_command

    call_command("revoke_agent", agent.name)
    response = submit(client, agent)
    assert response.status_code == 401 and "revoked" in response.json()["error"]["message"]


def test_keys_are_stored_only_as_digests(agent):
    key = ApiKey.objects.get(agent=agent.agent)
    assert agent.key not in (key.digest, key.prefix) and len(key.digest) == 64
    assert key.matches(agent.key) and not key.matches(agent.key + "x")
    assert len(agent.key) >= len("ovs_") + 43  # 256 random bits, base64


def test_it_answers_415_for_a_body_that_is_not_json(client, agent):
    response = post(client, "/api/v1/requests", agent, data="operation=x", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 415 and error_code(response) == "unsupported_media_type"


def test_it_answers_413_over_256_kib_and_for_a_payload_over_64_kib(client, agent):
    big = submit(client, agent, payload={"blob": "x" * (256 * 1024)})
    assert big.status_code == 413 and error_code(big) == "payload_too_large"
    payload = submit(client, agent, payload={"blob": "x" * (64 * 1024)})
    assert payload.status_code == 413 and error_code(payload) == "payload_too_large"
    fits = submit(client, agent, payload={"blob": "x" * (60 * 1024)})
    assert fits.status_code == 201


def test_it_answers_405_in_the_error_shape(client, agent):
    response = client.delete("/api/v1/requests", headers=agent.headers)
    assert response.status_code == 405 and error_code(response) == "method_not_allowed"
    assert "POST" in response["Allow"]


def test_unknown_api_paths_answer_json_404(client, agent):
    response = get(client, "/api/v1/nothing-here", agent)
    assert response.status_code == 404 and error_code(response) == "not_found"


def test_it_rate_limits_with_retry_after(client, agent, settings):
    settings.OVERSIGHT_RATE_LIMIT_PER_MINUTE = 3
    from django.core.cache import cache

    cache.clear()
    statuses = [get(client, "/api/v1/requests", agent).status_code for _ in range(5)]
    assert statuses[:3] == [200, 200, 200]
    limited = get(client, "/api/v1/requests", agent)
    assert limited.status_code == 429 and error_code(limited) == "rate_limited"
    assert 1 <= int(limited["Retry-After"]) <= 60
    cache.clear()


# --- Idempotency -----------------------------------------------------------------------


def test_a_retry_with_the_same_key_and_body_returns_the_request_with_200(client, agent):
    first = submit(client, agent, idempotency_key="run-42-step-7", metrics={"delegation_depth": 5})
    again = submit(client, agent, idempotency_key="run-42-step-7", metrics={"delegation_depth": 5})
    assert first.status_code == 201 and again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert OversightRequest.objects.count() == 1


def test_the_header_works_like_the_field(client, agent):
    first = post(client, "/api/v1/requests", agent, json={"operation": "x", "summary": "s"}, headers={"Idempotency-Key": "k1"})
    again = post(client, "/api/v1/requests", agent, json={"operation": "x", "summary": "s", "idempotency_key": "k1"})
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]


def test_the_same_key_with_a_different_body_is_a_conflict(client, agent):
    submit(client, agent, idempotency_key="k")
    response = submit(client, agent, idempotency_key="k", summary="something else")
    assert response.status_code == 409 and error_code(response) == "idempotency_conflict"
    assert OversightRequest.objects.count() == 1


def test_keys_belong_to_one_agent(client, agent, other_agent):
    assert submit(client, agent, idempotency_key="shared").status_code == 201
    assert submit(client, other_agent, idempotency_key="shared").status_code == 201


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("metrics", [{"delegation_depth": 5}, {"delegation_depth": 1}], ids=["critical", "routine"])
def test_concurrent_duplicates_make_one_row(agent, metrics):
    """Critical submissions are stored through the ORM, routine ones (decided at once) by
    their own INSERT statement (prepared, on PostgreSQL): the key's unique index makes one
    row either way, and the others answer with it."""
    from django.test import Client

    barrier = threading.Barrier(8)
    statuses, ids = [], []

    def send():
        try:
            barrier.wait()
            response = submit(Client(), agent, idempotency_key="race", metrics=metrics)
            statuses.append(response.status_code)
            ids.append(response.json().get("id"))
        finally:
            close_old_connections()

    threads = [threading.Thread(target=send) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [200] * 7 + [201]
    assert len(set(ids)) == 1
    assert OversightRequest.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_one_key_sent_at_once_with_a_routine_and_a_critical_body_never_deadlocks(agent):
    """A critical submission locks its agent's row to count what is pending; a routine one
    only references that row. Were the lock one that blocks references, the two would wait
    on each other through the idempotency key's unique index (PostgreSQL: a deadlock, a 503)."""
    from django.db import connection

    from oversight import actions

    if connection.vendor != "postgresql":
        pytest.skip("row locks and unique-index waits are PostgreSQL's")
    for round_ in range(20):
        barrier = threading.Barrier(6)
        outcomes = []

        def send(n, barrier=barrier, outcomes=outcomes, key=f"mixed-{round_}"):
            metrics = {"delegation_depth": 9} if n % 2 else {}
            submission = actions.Submission("delegate", "x", {"n": n % 2}, metrics, idempotency_key=key)
            try:
                barrier.wait()
                outcomes.append(actions.do_submit(agent.agent, submission)[1])
            except actions.IdempotencyConflict:
                outcomes.append("conflict")
            except Exception as error:  # what went wrong is the finding
                outcomes.append(repr(error)[:200])
            finally:
                close_old_connections()

        threads = [threading.Thread(target=send, args=(n,)) for n in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert set(outcomes) <= {True, False, "conflict"} and outcomes.count(True) == 1, outcomes
        assert OversightRequest.objects.filter(idempotency_key=f"mixed-{round_}").count() == 1


def test_a_database_that_is_down_is_a_503_to_retry_not_a_500(client, agent):
    from django.db import connections

    config = connections.settings["default"]
    saved = dict(config)
    connections.close_all()
    if config["ENGINE"].endswith("sqlite3"):
        config["NAME"] = "/nonexistent-dir/none.sqlite3"
    else:
        connections["default"].close_pool()
        config["PORT"] = 1
    try:
        response = submit(client, agent)
    finally:
        connections.close_all()
        if not config["ENGINE"].endswith("sqlite3"):
            connections["default"].close_pool()
        config.update(saved)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "unavailable"
    assert submit(client, agent).status_code == 201  # and it recovers
