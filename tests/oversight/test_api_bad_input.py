"""§9.2: anything outside the published schema is a 400 in the error shape; a fault of
the server's own is a 500 (logged), and only a dependency being down is a 503."""

import json
from datetime import timedelta

import pytest
from django.db import OperationalError
from django.utils import timezone

from monitoring.models import AgentSample
from oversight.models import OversightRequest
from tests.oversight.api_helpers import error_code, get, post, submit

pytestmark = pytest.mark.django_db(transaction=True)

HOT = {"memory_pressure": 95}


def raw_submit(client, agent, text: str):
    return post(client, "/api/v1/requests", agent, data=text)


def assert_400(response):
    assert response.status_code == 400, response.content
    assert error_code(response) in ("validation_error", "malformed_json")
    assert set(response.json()["error"]) == {"code", "message", "details"}


@pytest.mark.parametrize(
    "fragment",
    [
        '"metrics": {"memory_pressure": 1e999}',
        '"metrics": {"other": -1e999}',
        '"payload": {"x": 1e400}',
        '"metrics": {"memory_pressure": NaN}',
        '"payload": {"x": Infinity}',
        '"payload": {"x": [-Infinity]}',
    ],
)
def test_it_refuses_non_finite_numbers(client, agent, fragment):
    assert_400(raw_submit(client, agent, '{"operation": "delegate", "summary": "s", ' + fragment + "}"))
    assert not OversightRequest.objects.exists()


@pytest.mark.parametrize(
    "fragment",
    [
        '"summary": "bad \\udfff"',
        '"summary": "s", "payload": {"deep": ["ok", {"k": "\\ud800"}]}',
        '"summary": "s", "payload": {"\\udc00key": 1}',
        '"summary": "s", "idempotency_key": "\\uDFFF"',
        '"summary": "s", "metrics": {"host": "h\\ud83d"}',
    ],
)
def test_it_refuses_unpaired_surrogates_in_any_string(client, agent, fragment):
    assert_400(raw_submit(client, agent, '{"operation": "delegate", ' + fragment + "}"))
    assert not OversightRequest.objects.exists()


@pytest.mark.parametrize(
    "fragment",
    ['"summary": "a\\u0000b"', '"summary": "s", "payload": {"k": ["\\u0000"]}', '"summary": "s", "payload": {"\\u0000": 1}'],
)
def test_it_refuses_a_nul_character_that_no_text_column_stores(client, agent, fragment):
    assert_400(raw_submit(client, agent, '{"operation": "delegate", ' + fragment + "}"))
    assert_400(get(client, "/api/v1/requests?operation=a%00b", agent))
    assert not OversightRequest.objects.exists()


def test_it_accepts_a_surrogate_pair_and_a_literal_backslash_u(client, agent):
    body = '{"operation": "delegate", "summary": "smile \\ud83d\\ude00 and \\\\udfff"}'
    response = raw_submit(client, agent, body)
    assert response.status_code == 201, response.content
    assert response.json()["summary"] == "smile \U0001f600 and \\udfff"


def test_it_refuses_a_timeout_beyond_what_the_database_stores(client, agent):
    assert_400(submit(client, agent, metrics=HOT, timeout_seconds=2**63))


def sample(**fields) -> dict:
    return {"pid": 41, "process": "worker", "rss_bytes": 1000} | fields


def push(client, agent, *samples):
    return post(client, "/api/v1/metrics", agent, json={"host": "box-1", "samples": list(samples)})


@pytest.mark.parametrize(
    "fields",
    [
        {"rss_bytes": 2**63},
        {"vms_bytes": 2**63},
        {"pid": 2**31},
        {"cycles_found": 2**63},
        {"gc": {"collected": 2**63}},
        {"gc_counts": [1, 2**63]},
        {"gc_counts": [-1]},
        {"tracemalloc_top": [{"where": "a.py:1", "size_bytes": 2**63, "count": 1}]},
    ],
)
def test_it_refuses_integers_beyond_what_the_database_stores(client, agent, fields):
    assert_400(push(client, agent, sample(**fields)))
    assert not AgentSample.objects.exists()


def test_it_stores_the_largest_integers_the_database_can_hold(client, agent):
    response = push(client, agent, sample(pid=2**31 - 1, rss_bytes=2**63 - 1, vms_bytes=2**63 - 1))
    assert response.status_code == 202, response.content
    stored = AgentSample.objects.get()
    assert (stored.pid, stored.rss_bytes) == (2**31 - 1, 2**63 - 1)


@pytest.mark.parametrize(
    "at",
    [
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59Z",
        "2026-13-45T00:00:00Z",
        "2026-01-01T00:00:00",  # no timezone
        "yesterday",
    ],
)
def test_it_refuses_sample_times_that_are_not_times_or_out_of_bounds(client, agent, at):
    assert_400(push(client, agent, sample(at=at)))
    assert not AgentSample.objects.exists()


def test_it_bounds_sample_times_by_the_clock_and_the_retention(client, agent, settings):
    settings.MONITORING_RAW_RETENTION_DAYS = 7
    now = timezone.now()
    ahead = push(client, agent, sample(at=(now + timedelta(minutes=6)).isoformat()))
    assert_400(ahead)
    assert "5 minutes" in json.dumps(ahead.json())
    assert_400(push(client, agent, sample(at=(now - timedelta(days=7, minutes=1)).isoformat())))
    within = [(now + timedelta(minutes=4)).isoformat(), (now - timedelta(days=6)).isoformat()]
    assert push(client, agent, sample(at=within[0]), sample(at=within[1])).status_code == 202
    assert AgentSample.objects.count() == 2


@pytest.mark.parametrize(
    "query",
    [
        "limit=", "limit=1&limit=2", "limit=0", "limit=101", "limit=+5", "limit=%205", "limit=1_0", "limit=%D9%A5",
        "status=", "status=pending&status=approved", "operation=", "operation=a&operation=b", "cursor=",
        "cursor=a&cursor=b",
    ],
)
def test_it_refuses_empty_repeated_or_malformed_list_parameters(client, agent, query):
    assert_400(get(client, f"/api/v1/requests?{query}", agent))


@pytest.mark.parametrize("query", ["wait=", "wait=1&wait=2", "wait=56", "wait=-1", "wait=1.5"])
def test_it_refuses_empty_repeated_or_malformed_waits(client, agent, query):
    request_id = submit(client, agent, metrics=HOT).json()["id"]
    assert_400(get(client, f"/api/v1/requests/{request_id}?{query}", agent))
    assert_400(post(client, f"/api/v1/requests?{query}", agent, json={"operation": "delegate", "summary": "s"}))


def test_it_refuses_a_query_parameter_no_endpoint_publishes(client, agent):
    """§9.2: anything outside the published schema is a 400, an unknown parameter too;
    nothing is stored for a refused submission."""
    request_id = submit(client, agent, metrics=HOT).json()["id"]
    for method, path in [
        (get, "/api/v1/requests?state=pending"),
        (get, "/api/v1/requests?limit=1&sort=created_at"),
        (get, f"/api/v1/requests/{request_id}?wait=0&format=xml"),
        (get, f"/api/v1/requests/{request_id}/receipt?x=1"),
        (get, "/api/v1/keys?kid=abc"),
        (get, "/api/v1/openapi.json?v=2"),
        (lambda c, p, a: post(c, p, a, json={}), f"/api/v1/requests/{request_id}/cancel?force=1"),
        (lambda c, p, a: post(c, p, a, json={"samples": []}), "/api/v1/metrics?host=x"),
    ]:
        response = method(client, path, agent)
        assert_400(response)
        assert response.json()["error"]["details"].keys() <= {"state", "sort", "format", "x", "kid", "v", "force", "host"}
    stored = OversightRequest.objects.count()
    refused = post(client, "/api/v1/requests?wait=0&dry_run=1", agent, json={"operation": "delegate", "summary": "s"})
    assert_400(refused)
    assert refused.json()["error"]["details"] == {"dry_run": ["is not a parameter of this endpoint"]}
    assert OversightRequest.objects.count() == stored
    assert get(client, f"/api/v1/requests/{request_id}", agent).json()["status"] == "pending"  # not cancelled


def test_each_endpoint_takes_the_query_parameters_its_openapi_operation_lists(client):
    """The check above and the published document name the same parameters."""
    from django.urls import resolve

    paths = client.get("/api/v1/openapi.json").json()["paths"]
    for template, operations in paths.items():
        view = resolve(template.replace("{id}", "00000000-0000-0000-0000-000000000000")).func
        for method, operation in operations.items():
            if method == "parameters":
                continue
            listed = {p["name"] for p in operation.get("parameters", []) + operations.get("parameters", [])
                      if p["in"] == "query"}
            assert view.query_parameters[method.upper()] == listed, (template, method)


def test_it_still_accepts_well_formed_parameters(client, agent):
    submit(client, agent, metrics=HOT)
    response = get(client, "/api/v1/requests?limit=1&status=pending&operation=delegate", agent)
    assert response.status_code == 200
    assert len(response.json()["results"]) == 1


def test_it_answers_an_unexpected_error_with_500_in_the_error_shape_and_logs_it(client, agent, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr("oversight.api.views.request_dict", broken)
    response = submit(client, agent)
    assert response.status_code == 500
    assert error_code(response) == "internal_error"
    assert "Retry-After" not in response
    assert any(r.exc_info and "a bug" in str(r.exc_info[1]) for r in caplog.records)


def test_it_answers_an_unreachable_database_with_503_and_retry_after(client, agent, monkeypatch):
    def down(*args, **kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr("oversight.api.views.request_dict", down)
    response = submit(client, agent)
    assert response.status_code == 503
    assert error_code(response) == "unavailable"
    assert int(response["Retry-After"]) >= 1
