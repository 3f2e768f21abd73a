"""Statements of a submission's hot path, prepared on the PostgreSQL server.

Django's cursors bind parameters on the client and send each statement as text (the
simple protocol), so the server parses and plans it on every call. A routine submission
runs two statements every time, the read (its key, agent, owner, reject cooldown and
signing key, with the current policies) and the write (the request and its audit rows);
sent that way they were most of its time in the database. Here they run on a cursor of
the same connection that binds on the server, each prepared once per pooled connection
(psycopg names and caches them; the database's `prepare_threshold` option makes that
possible, and Django's own cursors, which bind on the client, never prepare), and
several statements go in one round trip through psycopg's pipeline.

Only for statements whose text is fixed (parameters as `%s`), and only on PostgreSQL.
They bypass Django's cursor wrapper, so they are not in `connection.queries`; errors
are still raised as Django's (`DatabaseError`, `OperationalError`, …).
"""

from __future__ import annotations

import psycopg
from django.db.backends.base.base import BaseDatabaseWrapper


def execute(db: BaseDatabaseWrapper, statements: list[tuple[str, list]]) -> list[psycopg.Cursor]:
    """Run `statements` (SQL, parameters) prepared, in one round trip, in the connection's
    transaction state (outside a transaction, each commits on its own); their cursors,
    in the same order, to fetch from."""
    db.ensure_connection()
    raw = db.connection
    cursors = [psycopg.Cursor(raw) for _ in statements]
    with db.wrap_database_errors:
        if len(statements) == 1:
            sql, params = statements[0]
            cursors[0].execute(sql, params, prepare=True)
        else:
            with raw.pipeline():
                for cursor, (sql, params) in zip(cursors, statements, strict=True):
                    cursor.execute(sql, params, prepare=True)
    return cursors
