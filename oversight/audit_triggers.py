"""The audit table is append-only in the database itself, not only in the code.

Triggers refuse UPDATE and DELETE of `oversight_auditevent` (and TRUNCATE on
PostgreSQL), whoever connects: the ORM, a raw cursor, `psql`. There is no switch
the service could flip from a session (no session setting is consulted): lifting
them takes ALTER TABLE (PostgreSQL, so the table's owner) or DROP TRIGGER (SQLite,
anyone with the file). docs/security.md therefore says to run the service as a
role that does not own the table.

The one legitimate emptier is the test suite: pytest-django's transactional tests
end with Django's `flush` (TRUNCATE on PostgreSQL, DELETE FROM on SQLite), which
the triggers would refuse. tests/conftest.py wraps that flush in
`suspended(connection)`, which lifts the triggers for the flush and restores them
after it, as the owner the tests connect as.
"""

from __future__ import annotations

from contextlib import contextmanager

TABLE = "oversight_auditevent"
MESSAGE = "oversight_auditevent is append-only"

_PG_CREATE = [
    f"""
    CREATE OR REPLACE FUNCTION oversight_audit_refuse() RETURNS trigger AS $$
    BEGIN
        RAISE EXCEPTION '{MESSAGE}: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
    END;
    $$ LANGUAGE plpgsql
    """,
    f"CREATE TRIGGER oversight_audit_no_update_delete BEFORE UPDATE OR DELETE ON {TABLE} "
    "FOR EACH ROW EXECUTE FUNCTION oversight_audit_refuse()",
    f"CREATE TRIGGER oversight_audit_no_truncate BEFORE TRUNCATE ON {TABLE} "
    "FOR EACH STATEMENT EXECUTE FUNCTION oversight_audit_refuse()",
]
_PG_DROP = [
    f"DROP TRIGGER IF EXISTS oversight_audit_no_truncate ON {TABLE}",
    f"DROP TRIGGER IF EXISTS oversight_audit_no_update_delete ON {TABLE}",
    "DROP FUNCTION IF EXISTS oversight_audit_refuse()",
]

# SQLite has no TRUNCATE (a DELETE without WHERE still fires row triggers).
_SQLITE_CREATE = [
    f"CREATE TRIGGER oversight_audit_no_update BEFORE UPDATE ON {TABLE} "
    f"BEGIN SELECT RAISE(ABORT, '{MESSAGE}: UPDATE refused'); END",
    f"CREATE TRIGGER oversight_audit_no_delete BEFORE DELETE ON {TABLE} "
    f"BEGIN SELECT RAISE(ABORT, '{MESSAGE}: DELETE refused'); END",
]
_SQLITE_DROP = [
    "DROP TRIGGER IF EXISTS oversight_audit_no_update",
    "DROP TRIGGER IF EXISTS oversight_audit_no_delete",
]


def _statements(vendor: str, create: bool) -> list[str]:
    if vendor == "postgresql":
        return _PG_CREATE if create else _PG_DROP
    if vendor == "sqlite":
        return _SQLITE_CREATE if create else _SQLITE_DROP
    return []  # other databases: the model's save() guard only


def install(connection) -> None:
    with connection.cursor() as cursor:
        for sql in _statements(connection.vendor, create=True):
            cursor.execute(sql)


def remove(connection) -> None:
    with connection.cursor() as cursor:
        for sql in _statements(connection.vendor, create=False):
            cursor.execute(sql)


def installed(connection) -> bool:
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "SELECT count(*) FROM pg_trigger WHERE tgrelid = %s::regclass AND NOT tgisinternal AND tgenabled <> 'D'",
                [TABLE],
            )
        elif connection.vendor == "sqlite":
            cursor.execute("SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND tbl_name = %s", [TABLE])
        else:
            return False
        return cursor.fetchone()[0] >= 2


@contextmanager
def suspended(connection):
    """Lift the triggers for the body, restore them after: for the test suite's flush only."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"ALTER TABLE {TABLE} DISABLE TRIGGER USER")
        try:
            yield
        finally:
            with connection.cursor() as cursor:
                cursor.execute(f"ALTER TABLE {TABLE} ENABLE TRIGGER USER")
    elif connection.vendor == "sqlite":
        remove(connection)
        try:
            yield
        finally:
            install(connection)
    else:
        yield
