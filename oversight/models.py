"""Agents and their keys, versioned policies, oversight requests and their audit trail."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

KEY_PREFIX = "ovs_"


def hash_key(raw_key: str) -> str:
    """The SHA-256 hex digest under which a key is stored (and callbacks are signed)."""
    return hashlib.sha256(raw_key.encode()).hexdigest()


class Agent(models.Model):
    name = models.CharField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    # The host the agent last named in pushed samples: where its pressure is read
    # from when a request carries none.
    last_host = models.CharField(max_length=255, blank=True)
    # Who runs this agent: never decides its requests.
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="owned_agents"
    )
    # Bound hosts: once set, the agent's pressure is read from these, and it may name no other.
    hosts = models.JSONField(default=list, blank=True)
    # The operations it may ask about (empty: any).
    operations = models.JSONField(default=list, blank=True)
    max_pending = models.PositiveIntegerField(default=20, help_text="Critical requests it may have pending at once.")

    def __str__(self) -> str:
        return self.name

    def issue_key(self, label: str = "") -> tuple[ApiKey, str]:
        """Create a key; the raw key is returned once and never stored."""
        raw = KEY_PREFIX + secrets.token_urlsafe(32)  # 256 random bits
        key = ApiKey.objects.create(agent=self, digest=hash_key(raw), prefix=raw[:10], label=label)
        return key, raw


class ApiKey(models.Model):
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="keys")
    digest = models.CharField(max_length=64, unique=True)
    prefix = models.CharField(max_length=16, help_text="The first characters, to tell keys apart.")
    label = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.agent.name})"

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def matches(self, raw_key: str) -> bool:
        return hmac.compare_digest(self.digest, hash_key(raw_key))


class TimeoutAction(models.TextChoices):
    APPROVE = "approve"
    REJECT = "reject"


class MissingMetrics(models.TextChoices):
    IGNORE = "ignore"
    CRITICAL = "critical"


class Policy(models.Model):
    """One version of the policy for an operation; an edit adds a new version.

    Versions are never changed once written: a request points at the version that
    evaluated it, and carries its own snapshot of the rules besides.
    """

    DEFAULT_OPERATION = "*"

    operation = models.CharField(max_length=64)
    version = models.PositiveIntegerField()
    is_current = models.BooleanField(default=True)
    memory_pressure = models.FloatField(null=True, blank=True, default=80.0, help_text="Empty: rule off.")
    delegation_depth = models.IntegerField(null=True, blank=True, default=4, help_text="Empty: rule off.")
    circular_refs = models.IntegerField(null=True, blank=True, default=3, help_text="Empty: rule off.")
    always = models.BooleanField(default=False)
    timeout_seconds = models.PositiveIntegerField(default=300)
    timeout_action = models.CharField(max_length=10, choices=TimeoutAction.choices, default=TimeoutAction.APPROVE)
    escalate_after = models.FloatField(null=True, blank=True, default=0.5)
    escalation_contacts = models.JSONField(default=list, blank=True)
    max_standing_seconds = models.PositiveIntegerField(
        default=0, help_text="Longest standing approval an operator may grant (0: never)."
    )
    trusted_agents = models.JSONField(default=list, blank=True)
    # Notification targets (e-mail, http(s) webhook, Apprise URL); credentials sealed.
    notify = models.JSONField(default=list, blank=True)
    remind_every_seconds = models.PositiveIntegerField(null=True, blank=True, help_text="Empty: no reminders.")
    min_timeout_seconds = models.PositiveIntegerField(default=60)
    required_approvals = models.PositiveSmallIntegerField(default=1)
    # Django group names whose members may decide (empty: every operator).
    approver_groups = models.JSONField(default=list, blank=True)
    missing_metrics = models.CharField(max_length=10, choices=MissingMetrics.choices, default=MissingMetrics.IGNORE)
    reject_cooldown_seconds = models.PositiveIntegerField(default=300)
    note = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.CharField(max_length=150, blank=True)
    # How long a receipt fetched later (GET .../receipt) stays valid.
    receipt_ttl_seconds = models.PositiveIntegerField(default=600)

    class Meta:
        verbose_name_plural = "policies"
        constraints = [
            models.UniqueConstraint(fields=["operation", "version"], name="policy_operation_version"),
            # Serves the lookup on every submission: the current version of an operation.
            models.UniqueConstraint(
                fields=["operation"], condition=Q(is_current=True), name="policy_one_current_per_operation"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.operation} v{self.version}"

    SETTING_FIELDS = (
        "memory_pressure",
        "delegation_depth",
        "circular_refs",
        "always",
        "timeout_seconds",
        "timeout_action",
        "escalate_after",
        "escalation_contacts",
        "trusted_agents",
        "notify",
        "remind_every_seconds",
        "receipt_ttl_seconds",
        "min_timeout_seconds",
        "required_approvals",
        "approver_groups",
        "missing_metrics",
        "reject_cooldown_seconds",
        "max_standing_seconds",
    )

    def settings_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.SETTING_FIELDS}

    @property
    def notify_masked(self) -> list[str]:
        """The notification targets as pages show them: no credentials."""
        from oversight.notifications import mask

        return [mask(t) for t in self.notify or []]


# The reasons operators pick from when rejecting (free text is always allowed); the
# monthly review tells presets from free text.
REJECT_PRESETS = (
    "Memory pressure too high right now",
    "Delegation too deep",
    "Circular references: fix before retrying",
    "Not expected for this agent",
    "Payload looks wrong",
)


class Status(models.TextChoices):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    CANCELLED = "cancelled"


FINAL_STATUSES = (Status.APPROVED, Status.REJECTED, Status.CANCELLED)


class Source(models.TextChoices):
    POLICY = "policy"
    OPERATOR = "operator"
    TIMEOUT = "timeout"
    AGENT = "agent"
    STANDING = "standing"  # approved at submission by an operator's standing grant


class OversightRequest(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    agent = models.ForeignKey(Agent, on_delete=models.PROTECT, related_name="requests")
    # The key that submitted: its digest signs the callback.
    api_key = models.ForeignKey(ApiKey, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    operation = models.CharField(max_length=64)
    summary = models.CharField(max_length=500)
    payload = models.JSONField(default=dict, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    critical = models.BooleanField(default=False)
    trusted_bypass = models.BooleanField(default=False)
    triggers = models.JSONField(default=list, blank=True)
    # Which rules fired, joined with "+" in a fixed order ("" when none): the reports
    # group by it to count rules alone and in combination.
    fired_rules = models.CharField(max_length=100, blank=True)
    policy = models.ForeignKey(Policy, on_delete=models.PROTECT, related_name="requests")
    policy_operation = models.CharField(max_length=64)
    policy_version = models.PositiveIntegerField()
    created_at = models.DateTimeField(default=timezone.now)
    deadline = models.DateTimeField(null=True, blank=True)
    escalate_at = models.DateTimeField(null=True, blank=True)
    escalated_at = models.DateTimeField(null=True, blank=True)
    timeout_action = models.CharField(max_length=10, choices=TimeoutAction.choices)
    # Who may decide, snapshot from the policy version (and the agent's owner) at submission.
    required_approvals = models.PositiveSmallIntegerField(default=1)
    approver_groups = models.JSONField(default=list, blank=True)
    owner_username = models.CharField(max_length=150, blank=True)
    # [{"by", "at"}] in order; `approval_count` is what an approval's conditional UPDATE claims.
    approvals = models.JSONField(default=list, blank=True)
    approval_count = models.PositiveSmallIntegerField(default=0)
    # SHA-256 of the payload's canonical JSON (RFC 8785), as `payload_sha256`: the reject
    # cooldown's key.
    payload_digest = models.CharField(max_length=64, blank=True)
    callback_url = models.URLField(max_length=2000, blank=True)
    idempotency_key = models.CharField(max_length=200, null=True, blank=True)
    body_digest = models.CharField(max_length=64, blank=True)
    decision_source = models.CharField(max_length=10, choices=Source.choices, blank=True)
    decided_by = models.CharField(max_length=150, blank=True)
    decision_reason = models.TextField(blank=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    # Signed decision receipts (oversight/receipts.py): the digest of the payload as
    # submitted, and the compact JWS made once at decision time.
    payload_sha256 = models.CharField(max_length=64, blank=True)
    receipt = models.TextField(blank=True)
    # An approval with changes: the payload the agent may run (null: as submitted).
    decision_payload = models.JSONField(null=True, blank=True)
    # A note from the operator to the agent, with an approval or a reject.
    decision_note = models.TextField(blank=True)
    # The standing grant that approved it at submission (source `standing`).
    standing_grant = models.ForeignKey(
        "StandingGrant", on_delete=models.PROTECT, null=True, blank=True, related_name="approved"
    )

    class Meta:
        indexes = [
            # The timeout sweep and the queue: pending requests, soonest deadline first.
            models.Index(fields=["deadline"], condition=Q(status="pending"), name="req_pending_deadline"),
            # /metrics: escalations since its checkpoint (monitoring/metrics.py).
            models.Index(fields=["escalated_at"], condition=Q(escalated_at__isnull=False), name="req_escalated"),
            # The escalation sweep: pending requests not yet escalated, by escalation time.
            models.Index(
                fields=["escalate_at"],
                condition=Q(status="pending", escalated_at__isnull=True),
                name="req_pending_escalate",
            ),
            # An agent's list, newest first, with its keyset cursor.
            models.Index(fields=["agent", "-created_at", "-id"], name="req_agent_created"),
            # History and the reports: decided requests by status and decision time.
            models.Index(fields=["status", "decided_at"], name="req_status_decided"),
            # History's default order (newest decisions first) and month reports.
            models.Index(fields=["-decided_at", "-id"], name="req_decided"),
            # The reject cooldown: an agent's operator-rejected requests of one operation and payload.
            models.Index(
                fields=["agent", "operation", "payload_digest", "decided_at"],
                condition=Q(status="rejected", decision_source="operator"),
                name="req_reject_cooldown",
            ),
            # Reports by month of submission.
            models.Index(fields=["created_at"], name="req_created"),
            # The monthly review's passes over a month (oversight/reviews/reports_pg.py) and the
            # advice's counts: every column they read, so PostgreSQL scans this narrow
            # index (index-only) instead of the wide rows with their JSON. All key
            # columns, no INCLUDE: SQLite has no INCLUDE, and every column is bounded.
            models.Index(
                fields=[
                    "created_at", "operation", "agent", "fired_rules", "critical", "trusted_bypass",
                    "decision_source", "status", "escalated_at", "decided_at", "decided_by",
                ],
                name="req_month_review",
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["agent", "idempotency_key"],
                condition=Q(idempotency_key__isnull=False),
                name="req_agent_idempotency_key",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.operation} by {self.agent_id} ({self.status})"


class AuditEvent(models.Model):
    """Append-only: one row per thing that happened to a request, a policy, a key or a person.

    Enforced three times: save() refuses an update, the admin is read-only, and
    database triggers refuse UPDATE, DELETE and TRUNCATE (oversight/audit_triggers.py).
    """

    class Kind(models.TextChoices):
        SUBMITTED = "submitted"
        EVALUATED = "evaluated"
        ESCALATED = "escalated"
        ESCALATION_NOTIFIED = "escalation_notified"
        DECIDED = "decided"
        CANCELLED = "cancelled"
        CALLBACK_DELIVERED = "callback_delivered"
        CALLBACK_FAILED = "callback_failed"
        NOTIFICATION_DELIVERED = "notification_delivered"
        NOTIFICATION_FAILED = "notification_failed"
        NOTIFICATION_SKIPPED = "notification_skipped"
        POLICY_CHANGED = "policy_changed"
        APPROVED = "approved"
        GRANT_CREATED = "grant_created"
        GRANT_REVOKED = "grant_revoked"
        KEY_CREATED = "key_created"
        KEY_REVOKED = "key_revoked"
        LOGIN_SUCCEEDED = "login_succeeded"
        LOGIN_FAILED = "login_failed"
        ALERT_ACKNOWLEDGED = "alert_acknowledged"

    request = models.ForeignKey(
        OversightRequest, on_delete=models.PROTECT, null=True, blank=True, related_name="events"
    )
    policy = models.ForeignKey(Policy, on_delete=models.PROTECT, null=True, blank=True, related_name="events")
    kind = models.CharField(max_length=30, choices=Kind.choices)
    at = models.DateTimeField(default=timezone.now)
    actor = models.CharField(max_length=150, blank=True, help_text="Who or what: a username, an agent, the policy, the timeout.")
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["at", "id"]
        indexes = [
            # A request's timeline on its page.
            models.Index(fields=["request", "at"], name="audit_request_at"),
            # /metrics: audited failures of one kind since its checkpoint (monitoring/metrics.py).
            # Login throttling counts recent failures too (oversight/logins.py).
            models.Index(fields=["kind", "at"], name="audit_kind_at"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} at {self.at:%Y-%m-%d %H:%M:%S}"

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise ValueError("Audit events are append-only.")
        from oversight.audit import current_address

        address = current_address.get()
        if address is not None and isinstance(self.data, dict) and "address" not in self.data:
            self.data = {"address": address} | self.data
        super().save(*args, **kwargs)


class MonthlyReview(models.Model):
    """The stored review of a finished month, written once on the 1st of the next.

    Later data fixes then never silently rewrite a month already reported on, and
    old months load without recomputing.
    """

    month = models.CharField(max_length=7, unique=True, help_text="YYYY-MM (UTC).")
    figures = models.JSONField(default=dict)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-month"]

    def __str__(self) -> str:
        return f"review {self.month}"


class Delivery(models.Model):
    """The outbox: one row per callback or notification, written in the transaction of
    the decision or event that causes it, then sent (at least once) by workers that
    claim it with a lease. Its id is the `X-Oversight-Delivery` header of every attempt."""

    class Kind(models.TextChoices):
        CALLBACK = "callback"
        NOTIFICATION = "notification"

    class State(models.TextChoices):
        PENDING = "pending"
        DELIVERED = "delivered"
        FAILED = "failed"
        SKIPPED = "skipped"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    key = models.CharField(max_length=300, unique=True, help_text="One delivery per key, whoever schedules it.")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    request = models.ForeignKey(
        OversightRequest, on_delete=models.CASCADE, null=True, blank=True, related_name="deliveries"
    )
    target = models.TextField(help_text="Where to: a URL or an address (credentials sealed).")
    event = models.CharField(max_length=30, blank=True)
    payload = models.JSONField(default=dict, blank=True)
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    lease_until = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=200, blank=True)

    class Meta:
        indexes = [
            # The sweep: pending rows by when they are due.
            models.Index(fields=["state", "next_attempt_at"], name="delivery_due"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.key} ({self.state})"


class SigningKey(models.Model):
    """An Ed25519 key that signs decision receipts; the private half encrypted with SECRET_KEY.

    A key is published in the JWKS from `created_at` and signs from `signs_from`, so
    verifiers can fetch it before its first receipt; it stays published until the
    receipts it signed have expired (oversight/receipts.py).
    """

    kid = models.CharField(max_length=64, unique=True)
    generation = models.PositiveIntegerField(unique=True)
    private_key = models.TextField(help_text="The PEM private key, encrypted with SECRET_KEY.")
    public_jwk = models.JSONField()
    created_at = models.DateTimeField(default=timezone.now)
    signs_from = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["generation"]

    def __str__(self) -> str:
        return f"signing key {self.kid}"


class RateWindow(models.Model):
    """A fixed one-minute request count per agent, kept in the database only while the
    cache (Redis) is down, so rate limits keep holding."""

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="+")
    minute = models.BigIntegerField()
    count = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["agent", "minute"], name="ratewindow_agent_minute")]


class StandingGrant(models.Model):
    """An operator's standing approval: for a while and a number of uses, later critical
    requests of one agent and operation that fire no more than the granting request did
    (and, unless its scope is any payload, carry the same payload) are approved at
    submission, with source `standing`.

    It binds to the policy version it was made under: once that version is no longer
    current, it matches nothing. Uses are taken by a conditional UPDATE in the
    submission's transaction, so a revoke and a use at the same instant end one way.
    """

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="grants")
    operation = models.CharField(max_length=64)
    policy = models.ForeignKey(Policy, on_delete=models.PROTECT, related_name="grants")
    request = models.ForeignKey(OversightRequest, on_delete=models.PROTECT, related_name="grants_made")
    # Each rule the granting request fired, with its value (None for `always`): a later
    # request may fire only these, each at most this high.
    rules = models.JSONField(default=dict)
    # SHA-256 of the canonical JSON (RFC 8785) of the payload the operator approved (the
    # decision's payload after an approval with changes); empty when any payload will do.
    payload_digest = models.CharField(max_length=64, blank=True)
    created_by = models.CharField(max_length=150)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    max_uses = models.PositiveIntegerField()
    uses_left = models.PositiveIntegerField()
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.CharField(max_length=150, blank=True)

    class Meta:
        indexes = [
            # The lookup on each critical submission: live grants of an agent and operation.
            models.Index(
                fields=["agent", "operation", "expires_at"], condition=Q(revoked_at__isnull=True),
                name="grant_live",
            ),
        ]

    def __str__(self) -> str:
        return f"grant #{self.pk}: {self.operation} for {self.agent_id}"


class DecisionLink(models.Model):
    """One of a pair of one-tap links (approve, reject) sent to one person about one request.

    The URL carries a signed token of the id, never the id alone; both links of a pair are
    burnt when either is used. Valid until the request's deadline, by the database's clock.
    """

    class Outcome(models.TextChoices):
        APPROVE = "approve"
        REJECT = "reject"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    pair = models.UUIDField(db_index=True)
    request = models.ForeignKey(OversightRequest, on_delete=models.CASCADE, related_name="+")
    user = models.ForeignKey("auth.User", on_delete=models.CASCADE, related_name="+")
    outcome = models.CharField(max_length=10, choices=Outcome.choices)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)
