"""The published openapi.json says what the API does (§9.2): a value its schema allows is
never a 400, one it refuses always is. Checked value by value with a JSON Schema
validator against the real views."""

import uuid

import pytest
from jsonschema import Draft202012Validator, FormatChecker

from tests.oversight.api_helpers import get, submit

pytestmark = pytest.mark.django_db(transaction=True)

METRICS = [
    {"memory_pressure": 0},
    {"memory_pressure": 100},
    {"memory_pressure": 99.5},
    {"memory_pressure": 100.5},
    {"memory_pressure": -0.5},
    {"memory_pressure": "80"},
    {"memory_pressure": None},
    {"delegation_depth": 2},
    {"delegation_depth": 2.5},
    {"host": "build-7"},
    {"host": ""},
    {"queue_length": 3},
    {"queue_length": 0.25},
    {"queue_length": None},
    {"queue_length": "three"},
    {"queue_length": True},
    {"queue_length": {"n": 3}},
    {"q" * 64: 1},
    {"q" * 65: 1},
]


def validator(client, schema: dict) -> Draft202012Validator:
    doc = client.get("/api/v1/openapi.json").json()
    return Draft202012Validator(schema | {"$defs": doc["components"]["schemas"]}, format_checker=FormatChecker())


def refs(schema: str) -> dict:
    return {"$ref": f"#/$defs/{schema}"}


@pytest.mark.parametrize("metrics", METRICS, ids=[repr(m)[:40] for m in METRICS])
def test_a_metric_is_accepted_exactly_when_the_schema_allows_it(client, agent, metrics):
    allowed = validator(client, refs("Metrics")).is_valid(metrics)
    response = submit(client, agent, metrics=metrics)
    assert response.status_code in (201, 400), response.content
    assert (response.status_code == 201) == allowed, (response.json(), allowed)


def test_memory_pressure_is_bounded_inclusively_in_the_schema(client):
    doc = client.get("/api/v1/openapi.json").json()
    pressure = doc["components"]["schemas"]["Metrics"]["properties"]["memory_pressure"]
    bounded = next(option for option in pressure["anyOf"] if option.get("type") == "number")
    assert (bounded["minimum"], bounded["maximum"]) == (0, 100)
    assert "exclusiveMinimum" not in bounded and "exclusiveMaximum" not in bounded


@pytest.mark.parametrize("request_id", ["not-a-uuid", "1", str(uuid.uuid4())])
@pytest.mark.parametrize("path", ["/api/v1/requests/{id}", "/api/v1/requests/{id}/receipt"])
def test_a_request_id_is_refused_exactly_when_the_schema_refuses_it(client, agent, request_id, path):
    doc = client.get("/api/v1/openapi.json").json()
    (param,) = [p for p in doc["paths"][path]["get"]["parameters"] if p["name"] == "id"]
    allowed = validator(client, param["schema"]).is_valid(request_id)
    response = get(client, path.format(id=request_id), agent)
    # No such request either way: a 404 when the schema allows the id, a 400 when not.
    assert response.status_code == (404 if allowed else 400), response.content
