"""The database's clock, which decides every deadline (spec §9.1).

SQLite stores a datetime as UTC text, 'YYYY-MM-DD HH:MM:SS.ffffff' (microseconds), and
compares it with its 'now' as text; but its 'now' has milliseconds only, and a shorter
string sorts first, so a deadline of exactly '…:38.123000' would be later than a now of
'…:38.123' and fall due a millisecond late, and a read in that millisecond would find
the request still pending. Both forms below therefore write SQLite's now with six
digits, as the stored values are written.
"""

from __future__ import annotations

from datetime import UTC, datetime

from django.db import connection
from django.db.models.functions import Now

# For raw statements (the claiming UPDATE, the deadline loop's look-ahead).
NOW_SQL = {
    "postgresql": "STATEMENT_TIMESTAMP()",
    "sqlite": "(strftime('%%Y-%%m-%%d %%H:%%M:%%f', 'now') || '000')",
}


class DatabaseNow(Now):
    """Django's `Now()`, with SQLite's now written to the microsecond like stored values."""

    def as_sqlite(self, compiler, connection, **extra_context):
        return self.as_sql(compiler, connection, template=NOW_SQL["sqlite"].replace("%", "%%"), **extra_context)


def db_now() -> datetime:
    """The database's clock (what decides whether a deadline has passed)."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {NOW_SQL[connection.vendor]}", [])
        value = cursor.fetchone()[0]
    return parse_sqlite_datetime(value) if isinstance(value, str) else value


def parse_sqlite_datetime(value: str | None) -> datetime | None:
    """A datetime as SQLite stores and computes it (UTC text) read by a raw query."""
    return None if value is None else datetime.fromisoformat(value).replace(tzinfo=UTC)
