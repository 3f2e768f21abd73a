"""On PostgreSQL a routine submission's read and write are prepared on the server once
per connection and then only executed (`oversight.prepared`): without the database's
`prepare_threshold` option psycopg silently sends them as text every time."""

import json

import pytest
from django.db import connection
from django.test import RequestFactory

from oversight.api import views
from oversight.models import AuditEvent, OversightRequest

postgresql = pytest.mark.skipif(connection.vendor != "postgresql", reason="prepared statements: PostgreSQL")


def _submit(agent, summary: str) -> dict:
    request = RequestFactory().post(
        "/api/v1/requests", content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {agent.key}",
        data=json.dumps({"operation": "scrape", "summary": summary, "metrics": {"delegation_depth": 1}}),
    )
    status, resource = views._submit(request, views._read_json(request, strict=True), None)
    assert status == 201
    return resource


def _prepared() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements WHERE statement NOT LIKE 'SELECT statement%%'")
        return sorted(row[0] for row in cursor.fetchall())


@postgresql
@pytest.mark.django_db(transaction=True)  # outside a transaction, as a submission runs in the server
def test_a_routine_submission_reads_and_writes_through_statements_prepared_once(agent):
    first = _submit(agent, "first")
    statements = _prepared()
    assert any("FROM oversight_apikey k" in s for s in statements)  # the read
    assert any("oversight_policy" in s for s in statements)  # the current policies
    assert any(s.startswith("WITH request AS (INSERT INTO") for s in statements)  # the write

    second = _submit(agent, "second")
    assert _prepared() == statements  # executed again, not prepared again

    for resource in (first, second):
        assert resource["status"] == "approved"
        stored = OversightRequest.objects.get(id=resource["id"])
        assert stored.summary in {"first", "second"}
        kinds = list(AuditEvent.objects.filter(request=stored).order_by("id").values_list("kind", flat=True))
        assert kinds == ["submitted", "evaluated", "decided"]


def test_a_pooler_that_cannot_keep_prepared_statements_can_turn_them_off(monkeypatch):
    from oversight import settings

    url = "postgres://postgres@127.0.0.1:5432/any"
    assert settings._database(url)["OPTIONS"]["prepare_threshold"] == 5
    monkeypatch.setenv("DATABASE_PREPARE", "0")
    assert settings._database(url)["OPTIONS"]["prepare_threshold"] is None
