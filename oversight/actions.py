"""Every change of a request's state happens here, and only here.

Views, API views, tasks and commands call these `do_*` functions. A decision is
a conditional UPDATE on `status = 'pending'`: whoever changes exactly one row
won, and only the winner audits, broadcasts and schedules the callback (after
commit). Operators' clicks and agents' cancels go through `do_decide`; the
timeout sweep, the deadline loop and the lazy deadline check on reads all go
through `claim_timeouts`, one bulk UPDATE judged by the database's clock (spec
§9.1), so exactly one of them wins a race, on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import accumulate

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, IntegrityError, connection, connections, transaction
from django.db.models import F
from django.utils import timezone

from oversight import policy as policies
from oversight import prepared, receipts
from oversight.dbclock import NOW_SQL, DatabaseNow, db_now
from oversight.diffs import json_changes
from oversight.events import FEED_GROUP, ROUTINE_GROUP, request_group, send_event_on_commit
from oversight.models import (
    Agent,
    ApiKey,
    AuditEvent,
    OversightRequest,
    Policy,
    Source,
    StandingGrant,
    Status,
)
from oversight.serializers import grant_dict, iso, payload_changed_by, request_dict


class AlreadyDecided(Exception):
    """The request was final before this decision could be applied."""

    def __init__(self, request: OversightRequest):
        self.request = request
        who = request.decided_by or request.decision_source
        super().__init__(f"Already {request.status} by {who}.")


class SubmissionInvalid(Exception):
    """A submission that is only invalid against its policy (e.g. a longer timeout)."""

    def __init__(self, details: dict[str, list[str]]):
        self.details = details
        super().__init__(str(details))


class OperationNotAllowed(Exception):
    """The agent is restricted to other operations."""


class TooManyPending(Exception):
    def __init__(self, limit: int, retry_after: int):
        self.limit = limit
        self.retry_after = retry_after
        super().__init__(f"At most {limit} pending requests.")


class AlreadyApproved(Exception):
    """This person already approved this request; a quorum needs different people."""

    def __init__(self, request: OversightRequest):
        self.request = request
        super().__init__("You already approved this request; another operator must approve it too.")


class BulkRefused(Exception):
    """A bulk approval that must be given on the request's own instead (nothing recorded)."""

    def __init__(self, request: OversightRequest, message: str):
        self.request = request
        super().__init__(message)


class BulkCannotCompleteQuorum(BulkRefused):
    """A bulk approval never completes a quorum of two or more (it may add a partial approval)."""

    def __init__(self, request: OversightRequest):
        super().__init__(
            request,
            f"Yours would be approval {len(request.approvals) + 1} of {request.required_approvals}, the last: "
            "a bulk approval never completes a quorum of two or more. Approve this request on its own.",
        )


class BulkCannotApproveAnEdit(BulkRefused):
    """A bulk approval never approves a payload another approver changed: the queue does not
    show the change, so it is approved on the request's page, where it is shown."""

    def __init__(self, request: OversightRequest):
        super().__init__(
            request,
            "Another operator approved this request with changes to its payload: "
            "approve it on its own page, where the changes are shown.",
        )


class PolicyInvalid(Exception):
    def __init__(self, errors: dict[str, str]):
        self.errors = errors
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))


class IdempotencyConflict(Exception):
    def __init__(self, request: OversightRequest):
        self.request = request
        super().__init__("This idempotency key was used with a different body.")


@dataclass(frozen=True)
class Submission:
    operation: str
    summary: str
    payload: dict
    metrics: dict
    timeout_seconds: int | None = None
    callback_url: str = ""
    idempotency_key: str | None = None

    def digest(self) -> str:
        """What makes two submissions 'the same body' for idempotency."""
        body = {
            "operation": self.operation,
            "summary": self.summary,
            "payload": self.payload,
            "metrics": self.metrics,
            "timeout_seconds": self.timeout_seconds,
            "callback_url": self.callback_url,
        }
        return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _load(request_id) -> OversightRequest:
    return OversightRequest.objects.select_related("agent").get(id=request_id)


def _broadcast(req: OversightRequest, event_type: str) -> None:
    """To the browsers' feed; decisions also to agents long-polling this request.

    Routine approvals by the policy (the bulk of the traffic, never queued) go only to
    the sockets that asked for them (ROUTINE_GROUP), and nowhere when
    OVERSIGHT_FEED_POLICY_DECISIONS is off: at hundreds of sockets they would dominate
    the fan-out, and no operator's queue shows them.
    """
    if event_type != "request.decided":
        groups = (FEED_GROUP,)
    elif req.decision_source == Source.POLICY:
        if not settings.OVERSIGHT_FEED_POLICY_DECISIONS:
            return
        groups = (ROUTINE_GROUP,)  # nobody long-polls a request decided at submission
    else:
        groups = (FEED_GROUP, request_group(req.id))
    send_event_on_commit(event_type, {"request": request_dict(req)}, groups=groups)


def check_host(agent: Agent, host: str | None) -> None:
    """An agent with bound hosts may name no other host."""
    if host and agent.hosts and host not in agent.hosts:
        raise SubmissionInvalid({"metrics.host": ["is not one of this agent's bound hosts"]})


def host_pressure_for(agent: Agent, metrics: dict, now: datetime) -> float | None:
    """The monitored pressure of the agent's host from a sample under 60 s old.

    A bound agent is judged by the highest of its bound hosts, whichever of them the
    request names: naming the calm one (or one with no recent sample) must not hide the
    pressure of the others (spec §9.1, risk an agent cannot understate). An agent without
    bound hosts: the host the request names, else the host of its latest samples.
    """
    from monitoring.hooks import recent_host_pressure

    if agent.hosts:
        hosts = list(agent.hosts)
    else:
        hosts = [metrics.get("host") or agent.last_host]
    pressures = [p for p in (recent_host_pressure(h, now) for h in hosts if h) if p is not None]
    return max(pressures) if pressures else None


def do_submit(
    agent: Agent,
    submission: Submission,
    *,
    api_key: ApiKey | None = None,
    now: datetime | None = None,
    read=None,
    payload_sha256: str | None = None,
) -> tuple[OversightRequest, bool]:
    """Evaluate and store a submission. Returns (request, created).

    A repeated idempotency key with the same body returns the existing request
    (created=False); with a different body it raises IdempotencyConflict.

    `read`: what the API read for this submission in one statement
    (`oversight.api.submitread.SubmitRead`: current policies, the latest operator's
    reject, the signing key), with `payload_sha256` the payload's digest it was read
    for; without it they are read here.
    """
    now = now or timezone.now()
    digest = submission.digest()
    if submission.idempotency_key:
        existing = _existing_for_key(agent, submission.idempotency_key, digest)
        if existing is not None:
            return existing, False

    if agent.operations and submission.operation not in agent.operations:
        raise OperationNotAllowed(f"This agent may only ask about: {', '.join(agent.operations)}.")
    check_host(agent, submission.metrics.get("host"))
    policy = policies.current_policy(submission.operation, read.policies if read is not None else None)
    if submission.timeout_seconds is not None and submission.timeout_seconds > policy.timeout_seconds:
        raise SubmissionInvalid(
            {"timeout_seconds": [f"must be at most {policy.timeout_seconds}, the policy's timeout"]}
        )
    floor = min(policy.min_timeout_seconds, policy.timeout_seconds)
    if submission.timeout_seconds is not None and submission.timeout_seconds < floor:
        raise SubmissionInvalid(
            {"timeout_seconds": [f"must be at least {floor}, the time the policy grants people"]}
        )
    pressure = host_pressure_for(agent, submission.metrics, now)
    evaluation = policies.evaluate(policy, agent_name=agent.name, metrics=submission.metrics, host_pressure=pressure)
    if read is None or payload_sha256 is None:
        payload_sha256 = receipts.payload_digest(submission.payload)

    req = OversightRequest(
        agent=agent,
        api_key=api_key,
        operation=submission.operation,
        summary=submission.summary,
        payload=submission.payload,
        metrics=submission.metrics,
        critical=evaluation.critical,
        trusted_bypass=evaluation.trusted_bypass,
        triggers=evaluation.triggers,
        fired_rules=evaluation.fired_rules,
        policy=policy,
        policy_operation=policy.operation,
        policy_version=policy.version,
        created_at=now,
        timeout_action=policy.timeout_action,
        required_approvals=policy.required_approvals,
        approver_groups=list(policy.approver_groups or []),
        owner_username=agent.owner.get_username() if agent.owner_id else "",
        # One digest, RFC 8785's: the receipt's `payload_sha256` and the reject cooldown's key.
        payload_digest=payload_sha256,
        payload_sha256=payload_sha256,
        callback_url=submission.callback_url,
        idempotency_key=submission.idempotency_key,
        body_digest=digest,
    )
    if read is not None:
        earlier_reason = read.recent_reject(policy, now)
    else:
        earlier_reason = _recent_reject(agent, req, policy, now)
    if earlier_reason is not None:
        req.status = Status.REJECTED
        req.decision_source = Source.POLICY
        req.decision_reason = earlier_reason
        req.decided_at = now
    elif evaluation.critical:
        # It waits for people: its deadline is placed by the clock that judges it, the
        # database's (spec §9.1), so that a node whose own clock runs behind cannot store
        # a request already overdue (and time it out at the next read).
        now = req.created_at = db_now()
        req.deadline, req.escalate_at = policies.timeline(policy, now, submission.timeout_seconds)
    else:
        req.status = Status.APPROVED
        req.decision_source = Source.POLICY
        req.decision_reason = "Trusted agent: policy bypassed." if evaluation.trusted_bypass else "No rule fired."
        req.decided_at = now

    signing = None
    if read is not None and req.status != Status.PENDING:
        try:
            signing = receipts.signing_key_from_row(read.signing_row, now)
        except receipts.SigningKeyError:
            pass  # decision_receipt reads it again, logs and stores no receipt

    try:
        if req.status != Status.PENDING and not req.critical and not req.callback_url:
            # Decided at submission, nothing to schedule: the request and its audit rows
            # are two INSERTs in one transaction, built without the ORM.
            req.receipt = receipts.decision_receipt(req, now=now, key=signing)
            _insert_decided(req, _submission_rows(req, policy, now))
            _broadcast(req, "request.decided")  # at once: committed above (or on the caller's commit)
            return req, True
        with transaction.atomic():
            if req.status == Status.PENDING:
                # Taken in this transaction: were the insert rolled back, so is the use.
                grant = use_standing_grant(agent, submission.operation, policy, evaluation.triggers, req.payload)
                if grant is not None:
                    _approve_by_grant(req, grant, now)
            if req.status == Status.PENDING:
                _check_pending_limit(agent, now)
            if req.status != Status.PENDING:
                req.receipt = receipts.decision_receipt(req, now=now, key=signing)
            req.save(force_insert=True)
            AuditEvent.objects.bulk_create(_submission_events(req, policy, now))
            if req.status == Status.PENDING:
                _broadcast(req, "request.created")
                transaction.on_commit(_announce_deadline)
                if policy.notify:
                    from oversight.notifications import schedule_for_request

                    schedule_for_request(req, "created", now=now)
            else:
                _broadcast(req, "request.decided")
                _schedule_callback(req)
    except IntegrityError:
        # Two submissions with one idempotency key raced; the other one is stored.
        if not submission.idempotency_key:
            raise
        existing = _existing_for_key(agent, submission.idempotency_key, digest)
        if existing is None:
            raise
        return existing, False
    return req, True


_REQUEST_FIELDS = OversightRequest._meta.concrete_fields
_AUDIT_FIELDS = [f for f in AuditEvent._meta.concrete_fields if not f.primary_key]


def _insert(model, fields, rows: list[list]) -> tuple[str, list]:
    """INSERT of `rows` (prepared values) into `model`: the SQL and its parameters. A None
    is written as NULL in the SQL: fewer parameters, so that psycopg keeps the query's
    parsed form (it caches queries of at most 50 parameters; a routine submission's two
    INSERTs have about 47 of them)."""
    quote = connection.ops.quote_name
    values = ", ".join("(" + ", ".join("NULL" if v is None else "%s" for v in row) + ")" for row in rows)
    sql = (f"INSERT INTO {quote(model._meta.db_table)}"  # noqa: S608 - model metadata only
           f" ({', '.join(quote(f.column) for f in fields)}) VALUES {values}")
    return sql, [v for row in rows for v in row if v is not None]


def _insert_decided(req: OversightRequest, audit_rows: list[dict]) -> None:
    """Store a request decided at submission and its three audit rows, in one transaction.

    Each value is prepared by its field as the ORM's INSERT would (`get_db_prep_save`).
    On PostgreSQL outside a transaction both INSERTs are one statement (the request's
    INSERT in a WITH), prepared on the server (`oversight.prepared`), which commits it
    before it answers: one round trip, no BEGIN or COMMIT of its own. Elsewhere (SQLite,
    or inside the caller's transaction) they run in an atomic block."""
    db = connections[DEFAULT_DB_ALIAS]  # the wrapper itself: no proxy lookup per value
    request_sql, request_params = _insert(
        OversightRequest, _REQUEST_FIELDS, [[f.get_db_prep_save(getattr(req, f.attname), db) for f in _REQUEST_FIELDS]]
    )
    audit_sql, audit_params = _insert(
        AuditEvent, _AUDIT_FIELDS, [[f.get_db_prep_save(row.get(f.attname), db) for f in _AUDIT_FIELDS]
                                    for row in audit_rows]
    )
    if db.vendor == "postgresql" and db.get_autocommit() and not db.in_atomic_block:
        # The audit rows' foreign key is checked at the end of the statement, by
        # when the request's row is in.
        prepared.execute(db, [(f"WITH request AS ({request_sql}) {audit_sql}", request_params + audit_params)])
        return
    with transaction.atomic(), db.cursor() as cursor:
        cursor.execute(request_sql, request_params)
        cursor.execute(audit_sql, audit_params)


def _submission_rows(req: OversightRequest, policy: Policy, now: datetime) -> list[dict]:
    """`_submission_events` of a request decided at submission, as column values."""
    return [
        {"request_id": req.id, "kind": AuditEvent.Kind.SUBMITTED, "at": now, "actor": req.agent.name,
         "data": {"operation": req.operation}},
        {"request_id": req.id, "kind": AuditEvent.Kind.EVALUATED, "at": now, "actor": "policy",
         "data": {"policy": str(policy), "critical": req.critical, "trusted_bypass": req.trusted_bypass,
                  "fired": req.fired_rules}},
        _decided_row(req),
    ]


def _announce_deadline() -> None:
    """Wake the deadline loops: this request may be due before what they sleep towards."""
    from oversight import deadlines

    deadlines.announce()


_RECENT_REJECT_SQL = (
    "SELECT decision_reason FROM oversight_oversightrequest"
    " WHERE agent_id = %s AND operation = %s AND payload_digest = %s"
    " AND status = 'rejected' AND decision_source = 'operator'"
    " AND decided_at > %s ORDER BY decided_at DESC LIMIT 1"
)


def _recent_reject(agent: Agent, req: OversightRequest, policy: Policy, now: datetime) -> str | None:
    """The reason of an operator's reject of the same operation and payload within the
    cooldown: asking again at once is not a way around a person's no.

    One SQL with the partial index's condition written as literals: with them bound as
    parameters SQLite cannot prove that `req_reject_cooldown` applies and walks every
    request of the agent instead."""
    if not policy.reject_cooldown_seconds:
        return None
    since = now - timedelta(seconds=policy.reject_cooldown_seconds)
    with connection.cursor() as cursor:
        cursor.execute(_RECENT_REJECT_SQL, [agent.pk, req.operation, req.payload_digest,
                             connection.ops.adapt_datetimefield_value(since)])
        row = cursor.fetchone()
    return row[0] if row else None


def _check_pending_limit(agent: Agent, now: datetime) -> None:
    """At most `max_pending` pending requests per agent. Locks the agent's row (on
    PostgreSQL) so that concurrent submissions count one after another.

    FOR NO KEY UPDATE, not FOR UPDATE: a routine submission's INSERT only references the
    agent's row (a KEY SHARE lock, by its foreign key), and must not wait for this lock
    while holding the idempotency key's index entry that this transaction's INSERT waits
    for: that was a deadlock."""
    Agent.objects.select_for_update(no_key=True).filter(pk=agent.pk).values_list("pk", flat=True).first()
    pending = OversightRequest.objects.filter(agent=agent, status=Status.PENDING, deadline__gt=DatabaseNow())
    if pending.count() < agent.max_pending:
        return
    soonest = pending.order_by("deadline").values_list("deadline", flat=True).first()
    retry_after = max(1, int((soonest - now).total_seconds()) + 1) if soonest else 60
    raise TooManyPending(agent.max_pending, retry_after)


def _existing_for_key(agent: Agent, key: str, digest: str) -> OversightRequest | None:
    existing = OversightRequest.objects.select_related("agent").filter(agent=agent, idempotency_key=key).first()
    if existing is not None and existing.body_digest != digest:
        raise IdempotencyConflict(existing)
    return existing


def _submission_events(req: OversightRequest, policy: Policy, now: datetime) -> list[AuditEvent]:
    events = [
        AuditEvent(request=req, kind=AuditEvent.Kind.SUBMITTED, at=now, actor=req.agent.name,
                   data={"operation": req.operation}),
        AuditEvent(request=req, kind=AuditEvent.Kind.EVALUATED, at=now, actor="policy",
                   data={"policy": str(policy), "critical": req.critical, "trusted_bypass": req.trusted_bypass,
                         "fired": req.fired_rules}),
    ]
    if req.status != Status.PENDING:
        events.append(_decided_event(req))
    return events


def _decided_event(req: OversightRequest) -> AuditEvent:
    row = _decided_row(req)
    return AuditEvent(request=req, kind=row["kind"], at=row["at"], actor=row["actor"], data=row["data"])


def _decided_row(req: OversightRequest) -> dict:
    kind = AuditEvent.Kind.CANCELLED if req.status == Status.CANCELLED else AuditEvent.Kind.DECIDED
    actor = req.decided_by or req.decision_source
    data = {"outcome": req.status, "source": req.decision_source, "reason": req.decision_reason}
    if req.decision_note:
        data["note"] = req.decision_note
    if req.decision_payload is not None:
        data["payload_changes"] = json_changes(req.payload, req.decision_payload)
    return {"request_id": req.id, "kind": kind, "at": req.decided_at, "actor": actor, "data": data}


def do_decide(
    request_id,
    *,
    outcome: str,
    source: str,
    by: str = "",
    reason: str = "",
    payload: dict | None = None,
    note: str = "",
    grant: GrantAsked | None = None,
    now: datetime | None = None,
    bulk: bool = False,
) -> OversightRequest:
    """Make the one final decision of a pending request, or raise AlreadyDecided.

    `outcome` is a final status (approved, rejected, cancelled). People and agents
    can only decide before the deadline; past it, the timeout is applied instead
    and they are told it won. An operator's approval may carry `payload`, the edited
    payload the agent may run instead (the audit keeps what changed), and any
    operator's decision a `note` to the agent. An operator's approval with `grant` also
    makes a standing grant (`make_standing_grant`) in the same transaction.
    """
    if payload is not None and outcome != Status.APPROVED:
        raise ValueError("Only an approval can change the payload.")
    if grant is not None and (outcome != Status.APPROVED or source != Source.OPERATOR):
        raise ValueError("Only an operator's approval can make a standing grant.")
    # A grant's expiry is judged by the database's clock (spec §9.1), so it is placed by
    # it too: on a node whose own clock runs ahead, a grant would outlive what was asked.
    now = now or (db_now() if grant is not None else timezone.now())
    if outcome not in (Status.APPROVED, Status.REJECTED, Status.CANCELLED):
        raise ValueError(f"Not a final outcome: {outcome!r}")
    if outcome == Status.APPROVED and source == Source.OPERATOR:
        return do_approve(request_id, by=by, reason=reason, payload=payload, note=note, grant=grant, now=now, bulk=bulk)
    if source == Source.TIMEOUT:
        raise ValueError("Timeouts are applied by claim_timeouts, on the database's clock.")
    # Before the deadline by the database's clock (spec §9.1), not this process's.
    claim = OversightRequest.objects.filter(id=request_id, status=Status.PENDING, deadline__gt=DatabaseNow())

    with transaction.atomic():
        won = claim.update(
            status=outcome, decision_source=source, decided_by=by, decision_reason=reason, decided_at=now,
            decision_payload=payload, decision_note=note,
        )
        req = _load(request_id)
        if won != 1:
            lost_to = req
        else:
            receipts.attach(req, now=now)
            _decided_event(req).save()
            _broadcast(req, "request.decided")
            _schedule_callback(req)
            if grant is not None:
                make_standing_grant(req, grant, by=by, now=now)
            return req

    # Lost: either someone else decided first, or the deadline passed.
    if lost_to.status == Status.PENDING:
        lost_to = apply_timeout_if_due(lost_to)
    raise AlreadyDecided(lost_to)


def do_approve(
    request_id,
    *,
    by: str,
    reason: str = "",
    payload: dict | None = None,
    note: str = "",
    grant: GrantAsked | None = None,
    now: datetime | None = None,
    bulk: bool = False,
) -> OversightRequest:
    """One operator's approval. The request is approved when `required_approvals`
    different operators have approved it; until then it stays pending.

    Each approval claims the row on `approval_count`, the number of approvals ever
    given (compare-and-swap): of two approvals given at once one wins, the other reads
    again and either adds itself after it or finds the request final. A reject or the
    timeout claims on status, so exactly one final decision is ever written.

    A `bulk` approval counts as one operator's approval like any other, except that it
    never completes a quorum of two or more (BulkCannotCompleteQuorum, nothing recorded):
    it can only add a partial approval; and never one to a payload another approver
    changed (BulkCannotApproveAnEdit), which the queue does not show.

    An approval with changes (`payload`) is for the new payload: it discards the
    approvals given before it. Under a quorum a standing grant is made by the approval
    that completes it, only if every approver asked for one (the shortest asked applies).
    """
    now = now or timezone.now()
    while True:
        req = _load(request_id)
        if req.status != Status.PENDING:
            raise AlreadyDecided(req)
        # Judged on the row as read for the claim below: a payload equal (as canonical JSON,
        # as the receipt signs it; in Python `0 == False`) to the one that stands (under a
        # quorum, an earlier approval's edit) is a plain approval of it; any other, an edit
        # back to the submitted one too, is an approval with changes.
        edit = payload
        if edit is not None:
            edited, submitted = receipts.payload_digest(edit), receipts.payload_digest(req.payload)
            stands = submitted if req.decision_payload is None else receipts.payload_digest(req.decision_payload)
            if edited == stands:
                edit = None
        if edit is None and any(a.get("by") == by for a in req.approvals):
            raise AlreadyApproved(req)
        entry = {"by": by, "at": iso(now)}
        if grant is not None:
            entry["grant"] = {"seconds": grant.seconds, "uses": grant.uses, "any_payload": grant.any_payload}
        approvals = [entry] if edit is not None else [*req.approvals, entry]
        count = req.approval_count
        complete = len(approvals) >= req.required_approvals
        if bulk and payload_changed_by(req) is not None:
            raise BulkCannotApproveAnEdit(req)
        if bulk and complete and req.required_approvals >= 2:
            # Judged on the row as read for the claim below: if another approval lands
            # first, the claim fails and this is judged again on the new count.
            raise BulkCannotCompleteQuorum(req)
        changes = {"approvals": approvals, "approval_count": count + 1}
        if edit is not None:
            # An edit back to the submitted payload (after another approver's edit) still
            # discards the approvals before it, and leaves the decision with no payload of
            # its own: the agent runs what it submitted.
            changes["decision_payload"] = None if edited == submitted else edit
        if complete:
            changes |= {"status": Status.APPROVED, "decision_source": Source.OPERATOR, "decided_by": by,
                        "decision_reason": reason, "decided_at": now, "decision_note": note}
        with transaction.atomic():
            won = OversightRequest.objects.filter(
                id=request_id, status=Status.PENDING, approval_count=count, deadline__gt=DatabaseNow()
            ).update(**changes)
            if won == 1:
                req = _load(request_id)
                AuditEvent.objects.create(
                    request=req, kind=AuditEvent.Kind.APPROVED, at=now, actor=by,
                    data={"approvals": len(approvals), "required": req.required_approvals,
                          "with_changes": edit is not None},
                )
                if not complete:
                    _broadcast(req, "request.updated")
                    return req
                receipts.attach(req, now=now)
                _decided_event(req).save()
                _broadcast(req, "request.decided")
                _schedule_callback(req)
                agreed = _agreed_grant(approvals)
                if agreed is not None:
                    make_standing_grant(req, agreed, by=by, now=now)
                return req

        # Lost: someone else approved, rejected or timed it out first, or the deadline
        # passed by the database's clock. Look again (after applying the timeout if due).
        fresh = apply_timeout_if_due(_load(request_id))
        if fresh.status != Status.PENDING:
            raise AlreadyDecided(fresh)


def _agreed_grant(approvals: list[dict]) -> GrantAsked | None:
    """The grant every approver asked for (the shortest and fewest), or None."""
    asks = [a.get("grant") for a in approvals]
    if not asks or any(ask is None for ask in asks):
        return None
    return GrantAsked(
        seconds=min(ask["seconds"] for ask in asks),
        uses=min(ask["uses"] for ask in asks),
        any_payload=all(ask["any_payload"] for ask in asks),
    )


TIMEOUT_REASON = "No decision before the deadline: the policy's timeout action ({action}) applied."

def _claim_sql(ids: list | None, limit: int) -> tuple[str, list]:
    """One conditional UPDATE claiming pending requests past their deadline by the
    database's clock, returning what this statement decided: on SQLite the ids, on
    PostgreSQL each request's columns, its agent's and its policy's, and the signing key."""
    quote = connection.ops.quote_name
    table = quote(OversightRequest._meta.db_table)
    now = NOW_SQL[connection.vendor]
    reason = TIMEOUT_REASON.split("{action}")
    due_params: list = []
    sets = f"""status = CASE timeout_action WHEN 'approve' THEN 'approved' ELSE 'rejected' END,
        decision_source = 'timeout', decided_by = '', decision_reason = %s || timeout_action || %s,
        decided_at = {now}, decision_payload = NULL, decision_note = ''"""
    only = ""
    if ids is not None:
        if connection.vendor == "postgresql":
            only = "AND id = ANY(%s::uuid[])"
            due_params.append([str(i) for i in ids])
        else:
            only = f"AND id IN ({', '.join(['%s'] * len(ids))})"
            due_params.extend(i.hex if hasattr(i, "hex") else str(i).replace("-", "") for i in ids)
    due = f"SELECT id FROM {table} WHERE status = 'pending' AND deadline <= {now} {only} ORDER BY deadline, id LIMIT %s"  # noqa: S608 (constants only; values travel as parameters)
    if connection.vendor == "postgresql":
        # Sweeps (no ids) SKIP LOCKED: concurrent sweeps share out the due rows instead
        # of queueing on them. A read of given requests waits for a claim in flight
        # instead, so it answers with the decision that claim commits, never "pending"
        # past the deadline; rows are locked in (deadline, id) order, so readers cannot
        # deadlock one another. MATERIALIZED: the locked set is computed once.
        # The won rows come back whole, with their agent, policy and the key that signs
        # now (one round trip instead of a SELECT after the UPDATE and one for the key).
        lock = "FOR UPDATE" if ids is not None else "FOR UPDATE SKIP LOCKED"
        signing = receipts.SIGNING_KEY_SQL.replace("%s", now)
        sql = f"""WITH due AS MATERIALIZED ({due} {lock}),
            won AS (UPDATE {table} AS r SET {sets.replace("timeout_action", "r.timeout_action")}
                    FROM due WHERE r.id = due.id AND r.status = 'pending' RETURNING {", ".join(columns("r", OversightRequest))})
            SELECT won.*, {", ".join(columns("a", Agent) + columns("p", Policy))},
                ({signing.replace("kid, private_key", "kid")}), ({signing.replace("kid, private_key", "private_key")})
            FROM won JOIN {quote(Agent._meta.db_table)} a ON a.id = won.agent_id
            LEFT JOIN {quote(Policy._meta.db_table)} p ON p.id = won.policy_id"""  # noqa: S608
        return sql, [*due_params, limit, *reason]
    else:
        # SQLite: the IMMEDIATE transaction holds the write lock, one claim at a time.
        sql = f"UPDATE {table} SET {sets} WHERE id IN ({due}) AND status = 'pending' RETURNING id"  # noqa: S608
        return sql, [*reason, *due_params, limit]


def claim_timeouts(*, ids: list | None = None, limit: int = 200) -> list[OversightRequest]:
    """Apply the timeout to up to `limit` pending requests past their deadline (of
    `ids` only, when given), judged by the database's clock: one conditional UPDATE,
    stamped `decided_at` = the database's now. Only the requests this call won are
    returned, audited, pushed and given their deliveries (outbox rows in the same
    transaction), so however many sweeps, loops and reads race, each request times
    out exactly once. The policy's timeout action applies, with source `timeout`,
    never as a human decision."""
    sql, params = _claim_sql(ids, limit)
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            rows = cursor.fetchall()
        if not rows:
            return []
        if connection.vendor == "postgresql":
            decided = [_claimed_request(row) for row in rows]
            key = receipts.signing_key_from_row(rows[0][-2:], decided[0].decided_at)
        else:
            won = [row[0] for row in rows]
            decided = list(OversightRequest.objects.select_related("agent", "policy").filter(id__in=won))
            key = None
        decided.sort(key=lambda r: r.deadline)
        if len(decided) == 1:
            receipts.attach(decided[0], now=decided[0].decided_at, key=key)
        else:
            receipts.attach_many(decided, key=key)
        AuditEvent.objects.bulk_create([_decided_event(req) for req in decided])
        for req in decided:
            _broadcast(req, "request.decided")
            _schedule_callback(req)
    return decided


def columns(alias: str, model) -> list[str]:
    """`model`'s concrete columns, quoted, qualified by `alias`, in field order (the order
    `_from_row` and the raw readers take them back in)."""
    quote = connection.ops.quote_name
    return [f"{alias}.{quote(f.column)}" for f in model._meta.concrete_fields]


def _from_row(model, values):
    """A model instance from its concrete columns as a raw cursor returned them (each
    value through the converters the ORM would apply: JSON text parsed, and so on)."""
    fields = model._meta.concrete_fields
    converted = []
    for field, value in zip(fields, values, strict=True):
        col = field.get_col(model._meta.db_table)
        for converter in connection.ops.get_db_converters(col) + field.get_db_converters(connection):
            value = converter(value, col, connection)
        converted.append(value)
    return model.from_db(connection.alias, [f.attname for f in fields], converted)


def _claimed_request(row: tuple) -> OversightRequest:
    """A row of the PostgreSQL claim: the request's columns, its agent's, its policy's."""
    ends = list(accumulate(len(m._meta.concrete_fields) for m in (OversightRequest, Agent, Policy)))
    req = _from_row(OversightRequest, row[: ends[0]])
    req.agent = _from_row(Agent, row[ends[0] : ends[1]])
    policy_row = row[ends[1] : ends[2]]
    req.policy = _from_row(Policy, policy_row) if policy_row[0] is not None else None
    return req


def _overdue():
    """Pending requests past their deadline by the database's clock."""
    return OversightRequest.objects.filter(status=Status.PENDING, deadline__lte=DatabaseNow())


def apply_timeout_if_due(req: OversightRequest, *, database_now: datetime | None = None) -> OversightRequest:
    """The lazy deadline check: a read of a request past its deadline (by the
    database's clock, whatever this process's clock says) applies the timeout.

    This is what makes the deadline hold with every worker down. Returns the
    request as it now stands (decided by whoever won). `database_now`, the database's
    clock read in the same query as `req` (when the caller has it): a request already
    past its deadline by it is claimed at once, without looking again first.
    """
    if database_now is not None and req.status == Status.PENDING and req.deadline is not None:
        if req.deadline <= database_now:
            return _claim_due([req.id])[req.id]
        return req
    return apply_timeouts_if_due([req])[0]


def apply_timeouts_if_due(requests: list[OversightRequest]) -> list[OversightRequest]:
    """`apply_timeout_if_due` for a page of requests: one indexed read for all of them
    (none when none is pending; no write lock when none is due), the claim only for
    those past their deadline."""
    pending = [r.id for r in requests if r.status == Status.PENDING and r.deadline is not None]
    if not pending:
        return requests
    due = set(_overdue().filter(id__in=pending).values_list("id", flat=True))
    if not due:
        return requests
    claimed = _claim_due(due)
    return [claimed.get(r.id, r) for r in requests]


def _claim_due(due) -> dict:
    """{id: the request as it now stands} for requests past their deadline: claimed
    here, or as whoever applied them first left them."""
    due = set(due)
    claimed = {r.id: r for r in claim_timeouts(ids=list(due), limit=len(due))}
    lost = due - claimed.keys()
    if lost:  # someone else applied them first: as they now stand
        claimed |= {r.id: r for r in OversightRequest.objects.select_related("agent").filter(id__in=lost)}
    return claimed


def do_cancel(agent: Agent, request_id, *, now: datetime | None = None) -> OversightRequest:
    return do_decide(
        request_id, outcome=Status.CANCELLED, source=Source.AGENT, by=agent.name,
        reason="Cancelled by the agent.", now=now,
    )


def expire_due(*, batch: int = 200) -> int:
    """Apply the timeout to pending requests past their deadline; returns how many this call decided.

    The sweep (every second) usually finds nothing due, the deadline loop having applied
    it: one indexed EXISTS first, so that on SQLite it does not take the database's write
    lock (an IMMEDIATE transaction) for nothing, holding up the loop's next claim."""
    if not _overdue().exists():
        return 0
    return len(claim_timeouts(limit=batch))


def expire_overdue() -> int:
    """Before a read that lists or counts pending requests: apply every timeout that is
    due, through the sweep's own claim, so the read shows each deadline as kept even
    with every worker down. Costs one indexed EXISTS (req_pending_deadline) when nothing
    is overdue, which is the usual case while the deadline loop runs."""
    total = 0
    # Bounded: a backlog larger than this is left to the sweep rather than one read.
    for _ in range(50):
        if not _overdue().exists():
            break
        total += expire_due(batch=500)
    return total


def escalate_due(*, now: datetime | None = None, batch: int = 200) -> int:
    """Mark pending requests whose escalation time has come (by the database's clock);
    returns how many this call escalated."""
    now = now or timezone.now()
    due = list(
        OversightRequest.objects.filter(status=Status.PENDING, escalated_at__isnull=True, escalate_at__lte=DatabaseNow())
        .order_by("escalate_at")
        .values_list("id", flat=True)[:batch]
    )
    escalated = 0
    for request_id in due:
        escalated += handle_one_escalation(request_id, now=now)
    return escalated


def handle_one_escalation(request_id, *, now: datetime) -> bool:
    with transaction.atomic():
        won = OversightRequest.objects.filter(
            id=request_id, status=Status.PENDING, escalated_at__isnull=True
        ).update(escalated_at=now)
        if won != 1:
            return False
        req = _load(request_id)
        AuditEvent.objects.create(
            request=req, kind=AuditEvent.Kind.ESCALATED, at=now, actor="escalation",
            data={"contacts": req.policy.escalation_contacts},
        )
        _broadcast(req, "request.escalated")
        from oversight.notifications import schedule_for_request
        from oversight.notify import recipients

        addresses, _ = recipients(req.policy.escalation_contacts or [])
        schedule_for_request(req, "escalated", extra=addresses, now=now)
    return True


def _schedule_callback(req: OversightRequest) -> None:
    """The decision's deliveries: the agent's callback and, for a request that waited
    for people, the decision notice. Outbox rows in this transaction."""
    from oversight import deliveries, notifications

    deliveries.schedule_callback(req)
    if req.critical:
        notifications.schedule_for_request(req, "decided", now=req.decided_at)


# --- Policies ------------------------------------------------------------------------


def _lock_policy_edits(operation: str) -> None:
    """Edits of one operation's policy, one at a time, each starting from the last.

    A row lock on the current version is not enough: a waiter wakes to find its row no
    longer current, and two first versions of a new operation have no row to lock, so
    the loser broke a unique constraint (a 500), or the two deadlocked on its index.
    PostgreSQL: a transaction-level advisory lock per operation. SQLite: IMMEDIATE
    transactions already take the write lock at BEGIN."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [f"policy:{operation}"])


def do_change_policy(operation: str, changes: dict, *, by: str, note: str = "", now: datetime | None = None) -> Policy:
    """Write a new version of `operation`'s policy (starting from the current one, or
    from the defaults for a new operation) and audit the change."""
    now = now or timezone.now()
    if "notify" in changes:  # validated, and credentials sealed (already sealed ones kept)
        from oversight.notifications import parse_notify

        changes = changes | {"notify": parse_notify(changes["notify"])}
    with transaction.atomic():
        _lock_policy_edits(operation)
        current = Policy.objects.filter(operation=operation, is_current=True).first()
        base = current.settings_dict() if current else Policy(operation=operation).settings_dict()
        new_settings = base | changes
        from oversight.policy_keys import check

        errors = check(new_settings)
        if errors:
            raise PolicyInvalid(errors)
        version = (current.version + 1) if current else (
            (Policy.objects.filter(operation=operation).order_by("-version").values_list("version", flat=True).first() or 0) + 1
        )
        if current:
            Policy.objects.filter(pk=current.pk).update(is_current=False)
        policy = Policy.objects.create(
            operation=operation, version=version, is_current=True, created_at=now, created_by=by, note=note,
            **new_settings,
        )
        AuditEvent.objects.create(
            policy=policy, kind=AuditEvent.Kind.POLICY_CHANGED, at=now, actor=by,
            data={"operation": operation, "version": version,
                  "changes": _masked_changes(base, new_settings),
                  "note": note},
        )
    return policy


def _masked_changes(base: dict, new: dict) -> dict:
    """A policy change for the audit: notification targets masked (no credentials)."""
    from oversight.notifications import mask

    changes = {}
    for key, value in new.items():
        before = base.get(key)
        if key == "notify":
            before, value = [mask(t) for t in before or []], [mask(t) for t in value or []]
        if before != value:
            changes[key] = [before, value]
    return changes


# --- Standing approvals (spec §9.7) ----------------------------------------------------

STANDING_USES_DEFAULT = 10
STANDING_USES_MAX = 100


@dataclass(frozen=True)
class GrantAsked:
    """What an operator asked for beside an approval: for `seconds`, at most `uses` times,
    for the same payload only unless `any_payload`."""

    seconds: int
    uses: int = STANDING_USES_DEFAULT
    any_payload: bool = False


def make_standing_grant(req: OversightRequest, asked: GrantAsked, *, by: str, now: datetime) -> StandingGrant:
    """The grant made by an approval of `req` (call inside its transaction)."""
    grant = StandingGrant.objects.create(
        agent=req.agent,
        operation=req.operation,
        policy_id=req.policy_id,
        request=req,
        rules={t["rule"]: t["value"] for t in req.triggers if t["fired"]},
        # What the operator approved: the edited payload of an approval with changes,
        # never the one submitted (whose edited-out fields it would let through).
        payload_digest="" if asked.any_payload else receipts.payload_digest(receipts.decided_payload(req)),
        created_by=by,
        created_at=now,
        expires_at=now + timedelta(seconds=asked.seconds),
        max_uses=asked.uses,
        uses_left=asked.uses,
    )
    AuditEvent.objects.create(
        request=req, kind=AuditEvent.Kind.GRANT_CREATED, at=now, actor=by,
        data={"grant": grant.pk, "seconds": asked.seconds, "uses": asked.uses, "any_payload": asked.any_payload,
              "rules": grant.rules, "policy": str(req.policy)},
    )
    send_event_on_commit("grant.created", {"grant": grant_dict(grant)})
    return grant


def use_standing_grant(agent: Agent, operation: str, policy: Policy, triggers: list[dict], payload: dict):
    """Take one use of a live grant that covers this submission, or return None.

    Live means: the policy version it was made under is the one evaluating now, not
    revoked, uses left, not expired by the database's clock. The use is a conditional
    UPDATE on those same conditions, so a revoke or the last use racing it wins or loses
    whole. Call inside the submission's transaction.
    """
    fired = {t["rule"]: t["value"] for t in triggers if t["fired"]}
    digest = receipts.payload_digest(payload)
    # `policy__is_current` in the claim itself: the caller may have read the policies
    # before this transaction, and a version committed since ends the grant.
    live = {"revoked_at__isnull": True, "uses_left__gt": 0, "expires_at__gt": DatabaseNow(), "policy__is_current": True}
    candidates = StandingGrant.objects.filter(agent=agent, operation=operation, policy=policy, **live)
    for grant in candidates.order_by("expires_at", "id"):
        if grant.payload_digest and grant.payload_digest != digest:
            continue
        if not _covered(fired, grant.rules):
            continue
        if StandingGrant.objects.filter(id=grant.id, **live).update(uses_left=F("uses_left") - 1) == 1:
            grant.uses_left -= 1
            return grant
    return None


def _covered(fired: dict, granted: dict) -> bool:
    """Every rule fired now was fired by the granting request, each value no higher."""
    for rule, value in fired.items():
        if rule not in granted:
            return False
        limit = granted[rule]
        if value is not None and (limit is None or value > limit):
            return False
    return True


def _approve_by_grant(req: OversightRequest, grant: StandingGrant, now: datetime) -> None:
    req.status = Status.APPROVED
    req.decision_source = Source.STANDING
    req.decided_by = grant.created_by
    req.decision_reason = (
        f"Standing approval #{grant.pk} by {grant.created_by} until {iso(grant.expires_at)} "
        f"({grant.uses_left} of {grant.max_uses} uses left)."
    )
    req.decided_at = now
    req.standing_grant = grant
    req.deadline = req.escalate_at = None


def do_revoke_grant(grant_id: int, *, by: str, now: datetime | None = None) -> StandingGrant:
    """Revoke a grant; raises StandingGrant.DoesNotExist when it is unknown or already revoked."""
    now = now or timezone.now()
    with transaction.atomic():
        if StandingGrant.objects.filter(id=grant_id, revoked_at__isnull=True).update(revoked_at=now, revoked_by=by) != 1:
            raise StandingGrant.DoesNotExist(f"No grant #{grant_id} in force.")
        grant = StandingGrant.objects.select_related("agent", "policy").get(id=grant_id)
        AuditEvent.objects.create(
            request_id=grant.request_id, kind=AuditEvent.Kind.GRANT_REVOKED, at=now, actor=by,
            data={"grant": grant.pk, "uses_left": grant.uses_left},
        )
        send_event_on_commit("grant.revoked", {"grant": grant_dict(grant)})
    return grant


def grants_in_force():
    """Grants that can still approve something: for the queue page and the feed's snapshot."""
    return (
        StandingGrant.objects.select_related("agent", "policy")
        .filter(revoked_at__isnull=True, uses_left__gt=0, expires_at__gt=DatabaseNow(), policy__is_current=True)
        .order_by("expires_at", "id")
    )
