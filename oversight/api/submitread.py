"""What a submission reads before it decides, in one statement.

A routine submission needs the caller's key (with its agent and the agent's owner),
the current policies, the latest operator's reject of the same operation and payload
(the reject cooldown) and the key that signs receipts now. None of them needs a lock,
so they are read together: one SELECT (the key's row joined to its agent, the reject
and the signing key as scalar subqueries) and the current policies' rows. On
PostgreSQL both are prepared on the server and go in one round trip
(`oversight.prepared`); on SQLite (in process, no round trip) they are two statements.

The key and its agent come from a per-process copy, reused while the row just read
is equal, column for column, to the one the copy was built from: a revocation, a
changed agent or owner is seen by the next request in any process, because the row
is read every time; only the model objects are not built again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from django.contrib.auth import get_user_model
from django.db import connection
from django.utils.dateparse import parse_datetime

from oversight import policy as policies
from oversight import prepared
from oversight.actions import columns
from oversight.models import Agent, ApiKey, OversightRequest, Policy, SigningKey


@dataclass(frozen=True)
class SubmitRead:
    key: ApiKey | None  # None: no key has this digest, or it is revoked
    revoked: bool
    policies: dict[str, Policy]
    reject: tuple[datetime, str] | None  # the latest operator's reject: (decided_at, reason)
    signing_row: tuple[str, str] | None  # (kid, encrypted private key), None before the first key

    def recent_reject(self, policy: Policy, now: datetime) -> str | None:
        """The reason of an operator's reject within `policy`'s cooldown, if any."""
        if not policy.reject_cooldown_seconds or self.reject is None:
            return None
        decided_at, reason = self.reject
        return reason if (now - decided_at).total_seconds() < policy.reject_cooldown_seconds else None


def _sql() -> str:
    user = get_user_model()
    username = user._meta.get_field(user.USERNAME_FIELD).column
    quote = connection.ops.quote_name
    requests, keys, agents = OversightRequest._meta.db_table, ApiKey._meta.db_table, Agent._meta.db_table
    # The reject cooldown's partial index (req_reject_cooldown) is only usable when its
    # condition is written as literals, as here.
    reject = (
        f"SELECT {{}} FROM {requests} r WHERE r.agent_id = k.agent_id AND r.operation = %s"  # noqa: S608
        " AND r.payload_digest = %s AND r.status = 'rejected' AND r.decision_source = 'operator'"
        " ORDER BY r.decided_at DESC LIMIT 1"
    )
    signing = (
        f"SELECT s.{{}} FROM {SigningKey._meta.db_table} s WHERE s.signs_from <= %s"  # noqa: S608
        " ORDER BY s.generation DESC LIMIT 1"
    )
    return (
        f"SELECT {', '.join(columns('k', ApiKey) + columns('a', Agent))}, u.{quote(username)},"  # noqa: S608
        f" ({reject.format('r.decided_at')}), ({reject.format('r.decision_reason')}),"
        f" ({signing.format('kid')}), ({signing.format('private_key')})"
        f" FROM {keys} k JOIN {agents} a ON a.id = k.agent_id"
        f" LEFT JOIN {user._meta.db_table} u ON u.{quote(user._meta.pk.column)} = a.owner_id"
        " WHERE k.digest = %s"
    )


_SQL: str | None = None
_KEY_COLUMNS = len(ApiKey._meta.concrete_fields) + len(Agent._meta.concrete_fields) + 1
_REVOKED_AT = [f.attname for f in ApiKey._meta.concrete_fields].index("revoked_at")

# {(database, key digest): (the key's joined row, the ApiKey with its agent and owner)}
_key_copies: dict[tuple[str, str], tuple[tuple, ApiKey]] = {}
MAX_KEY_COPIES = 1000


def read(digest: str, operation: str, payload_digest: str, now: datetime) -> SubmitRead:
    """Everything `do_submit` reads without a lock, for the key with `digest`."""
    global _SQL
    if _SQL is None:
        _SQL = _sql()
    at = connection.ops.adapt_datetimefield_value(now)
    params = [operation, payload_digest, operation, payload_digest, at, at, digest]
    if connection.vendor == "postgresql":
        keys, current_rows = prepared.execute(connection, [(_SQL, params), (policies.CURRENT_ROWS_SQL, [True])])
        row = keys.fetchone()
        policy_rows = current_rows.fetchall()
    else:
        with connection.cursor() as cursor:
            cursor.execute(_SQL, params)
            row = cursor.fetchone()
            cursor.execute(policies.CURRENT_ROWS_SQL, [True])
            policy_rows = cursor.fetchall()
    current = policies.policies_from_rows(policy_rows)
    if row is None:
        return SubmitRead(None, False, current, None, None)
    key_row = tuple(row[:_KEY_COLUMNS])
    rejected_at, reason, kid, token = row[_KEY_COLUMNS:]
    reject = (_datetime(rejected_at), reason) if rejected_at is not None else None
    signing_row = (kid, token) if kid is not None else None
    if key_row[_REVOKED_AT] is not None:
        return SubmitRead(None, True, current, reject, signing_row)
    return SubmitRead(_key(digest, key_row), False, current, reject, signing_row)


def _key(digest: str, key_row: tuple) -> ApiKey | None:
    """The process's ApiKey (agent and owner loaded) for this row, built anew when the row changed."""
    slot = (f"{connection.alias}:{connection.settings_dict['NAME']}", digest)
    copy = _key_copies.get(slot)
    if copy is not None and copy[0] == key_row:
        return copy[1]
    # At least as new as `key_row`; a later change differs from it next time.
    key = ApiKey.objects.select_related("agent__owner").filter(digest=digest).first()
    if key is None:  # deleted since the read
        return None
    if len(_key_copies) >= MAX_KEY_COPIES:
        _key_copies.clear()
    _key_copies[slot] = (key_row, key)
    return key


def _datetime(value) -> datetime:
    """A timestamp column read raw: a datetime (PostgreSQL) or its text (SQLite, UTC)."""
    if isinstance(value, str):
        value = parse_datetime(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
