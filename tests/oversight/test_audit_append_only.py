"""The audit table refuses UPDATE, DELETE (and TRUNCATE on PostgreSQL) in the database itself."""

from __future__ import annotations

import pytest
from django.db import DatabaseError, connection, transaction

from oversight import audit_triggers
from oversight.models import AuditEvent


@pytest.fixture
def event(db):
    return AuditEvent.objects.create(kind=AuditEvent.Kind.POLICY_CHANGED, actor="cli", data={"x": 1})


def _refused(sql: str, params=()) -> str:
    with pytest.raises(DatabaseError) as caught, transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql, params)
    return str(caught.value)


def test_it_refuses_a_raw_update(event):
    message = _refused("UPDATE oversight_auditevent SET actor = 'mallory' WHERE id = %s", [event.id])
    assert "append-only" in message
    event.refresh_from_db()
    assert event.actor == "cli"


def test_it_refuses_a_raw_delete(event):
    assert "append-only" in _refused("DELETE FROM oversight_auditevent WHERE id = %s", [event.id])
    assert AuditEvent.objects.filter(id=event.id).exists()


def test_it_refuses_a_delete_of_every_row(event):
    assert "append-only" in _refused("DELETE FROM oversight_auditevent")
    assert AuditEvent.objects.count() == 1


def test_it_refuses_an_orm_bulk_update_and_delete(event):
    with pytest.raises(DatabaseError), transaction.atomic():
        AuditEvent.objects.filter(id=event.id).update(actor="mallory")
    with pytest.raises(DatabaseError), transaction.atomic():
        AuditEvent.objects.filter(id=event.id).delete()
    assert AuditEvent.objects.get(id=event.id).actor == "cli"


@pytest.mark.skipif(connection.vendor != "postgresql", reason="TRUNCATE exists on PostgreSQL only")
@pytest.mark.django_db(transaction=True)
def test_it_refuses_a_truncate():
    # Committed first: in the inserting transaction PostgreSQL refuses for another reason
    # (pending deferred foreign-key checks), which would prove nothing.
    AuditEvent.objects.create(kind=AuditEvent.Kind.POLICY_CHANGED, actor="cli")
    assert "append-only" in _refused("TRUNCATE oversight_auditevent")
    assert AuditEvent.objects.count() == 1


def test_it_still_accepts_inserts(db):
    AuditEvent.objects.create(kind=AuditEvent.Kind.SUBMITTED, actor="a")
    AuditEvent.objects.create(kind=AuditEvent.Kind.SUBMITTED, actor="b")
    assert AuditEvent.objects.count() == 2


@pytest.mark.django_db(transaction=True)
def test_it_keeps_the_triggers_through_the_test_suites_flush():
    """Transactional tests end with a flush; the triggers are lifted for it and come back."""
    AuditEvent.objects.create(kind=AuditEvent.Kind.SUBMITTED, actor="a")
    from django.core.management import call_command

    call_command("flush", verbosity=0, interactive=False)
    assert AuditEvent.objects.count() == 0
    assert audit_triggers.installed(connection)
