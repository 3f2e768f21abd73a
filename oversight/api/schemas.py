"""Validation models of the agent API. The same models generate openapi.json."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, WithJsonSchema, field_validator, model_validator

OPERATION_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
MAX_BODY_BYTES = 256 * 1024
MAX_PAYLOAD_BYTES = 64 * 1024
MAX_WAIT_SECONDS = 55
# An http(s) URL with a host: what the schema can say; the address rules come on top.
CALLBACK_PATTERN = r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[!-~]*)?$"
# A list cursor: microseconds since 1970 (17 digits reach past the year 5000) and an id.
CURSOR_PATTERN = r"^[0-9]{1,17}-[0-9a-f]{32}$"
# What the database stores: IntegerField is 32-bit signed, BigIntegerField 64-bit signed.
MAX_INT32 = 2**31 - 1
MAX_INT64 = 2**63 - 1
# A sample may be this far ahead of the server's clock (clock skew), no further.
MAX_SAMPLE_SKEW = timedelta(minutes=5)


def _number(value: Any, name: str) -> float | int:
    # bool is an int subclass in Python; in JSON it is not a number.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number")
    return value


MAX_EXTRA_METRICS = 50
MAX_METRIC_NAME = 64
# A JSON number (an integer or not; never a boolean), as the schema says it.
_NUMBER = {"type": "number"}


def _metrics_schema(schema: dict) -> None:
    # Other keys: numbers (or null, which counts as absent), names of at most 64
    # characters; at most 50 of them besides the four named ones.
    schema["additionalProperties"] = {"anyOf": [_NUMBER, {"type": "null"}]}
    schema["propertyNames"] = {"maxLength": MAX_METRIC_NAME}
    schema["maxProperties"] = MAX_EXTRA_METRICS + len(schema["properties"])


class Metrics(BaseModel):
    """What the agent measured. Other numeric keys are kept and shown."""

    model_config = ConfigDict(extra="allow", strict=True, json_schema_extra=_metrics_schema)

    memory_pressure: Annotated[
        float | int, Field(ge=0, le=100), WithJsonSchema(_NUMBER | {"minimum": 0, "maximum": 100})
    ] | None = Field(None, description="Percent, 0–100.")
    delegation_depth: int | None = Field(None, ge=0, le=1_000_000)
    circular_refs: int | None = Field(None, ge=0, le=1_000_000_000)
    host: Annotated[str, StringConstraints(min_length=1, max_length=255)] | None = Field(
        None,
        description="The agent's machine: memory_pressure is judged as the larger of the agent's value and this "
        "host's monitored pressure. An agent with bound hosts may name only one of them.",
    )

    @field_validator("memory_pressure", mode="before")
    @classmethod
    def _pressure(cls, value):
        return None if value is None else _number(value, "memory_pressure")

    @field_validator("delegation_depth", "circular_refs", mode="before")
    @classmethod
    def _count(cls, value, info):
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{info.field_name} must be a whole number")
        return value

    @model_validator(mode="after")
    def _extras(self):
        extras = self.model_extra or {}
        if len(extras) > MAX_EXTRA_METRICS:
            raise ValueError(f"at most {MAX_EXTRA_METRICS} extra metrics")
        for key, value in extras.items():
            if len(key) > MAX_METRIC_NAME:
                raise ValueError(f"metric names are at most {MAX_METRIC_NAME} characters")
            if value is not None:
                _number(value, key)
        return self

    def as_dict(self) -> dict:
        """The stored form: absent and null values dropped."""
        return {k: v for k, v in self.model_dump().items() if v is not None}


class SubmitRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    operation: Annotated[str, StringConstraints(pattern=OPERATION_PATTERN)] = Field(
        description="The operation type; its policy decides. `[a-z0-9][a-z0-9_.-]{0,63}`."
    )
    summary: Annotated[str, StringConstraints(min_length=1, max_length=500)] = Field(
        description="What the agent wants to do, for the operator (1–500 characters)."
    )
    payload: dict[str, Any] | None = Field(None, description="Any JSON object, at most 64 KiB serialized. Shown escaped.")
    metrics: Metrics | None = None
    timeout_seconds: int | None = Field(
        None, ge=1, le=MAX_INT32,
        description="May only shorten the policy's timeout, never below its min_timeout_seconds (default 60).",
    )
    callback_url: Annotated[str, StringConstraints(max_length=2000, pattern=CALLBACK_PATTERN)] | None = Field(
        None,
        description=(
            "http(s) URL that receives the final resource, signed. The operator's address rules may "
            "refuse a host (400)."
        ),
    )
    idempotency_key: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None

    @field_validator("summary")
    @classmethod
    def _summary(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("summary must not be blank")
        return value

    @field_validator("timeout_seconds", mode="before")
    @classmethod
    def _timeout(cls, value):
        if isinstance(value, bool):
            raise ValueError("timeout_seconds must be a whole number")
        return value

    @field_validator("callback_url")
    @classmethod
    def _callback(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from urllib.parse import urlsplit

        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 — raises on a bad port
        except ValueError:
            raise ValueError("callback_url is not a valid URL") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("callback_url must be an http(s) URL")
        from oversight.netsafe import Refused, ascii_host

        try:
            ascii_host(parts.hostname)
        except Refused:
            raise ValueError("callback_url has an invalid host name") from None
        return value


class GcFigures(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    collected: int | None = Field(None, ge=0, le=MAX_INT64)
    uncollectable: int | None = Field(None, ge=0, le=MAX_INT64)


class TracemallocSite(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    where: Annotated[str, StringConstraints(max_length=500)]
    size_bytes: int = Field(ge=0, le=MAX_INT64)
    count: int = Field(ge=0, le=MAX_INT64)


class ProcessSample(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    at: str | None = Field(
        None,
        json_schema_extra={"format": "date-time"},
        description=(
            "ISO-8601 time of the sample, with a timezone; the server's time when absent. At most 5 minutes "
            "ahead of the server's clock and not older than the raw-sample retention (7 days by default)."
        ),
    )
    pid: int = Field(ge=0, le=MAX_INT32)
    process: Annotated[str, StringConstraints(max_length=200)] = ""
    rss_bytes: int = Field(ge=0, le=MAX_INT64)
    vms_bytes: int | None = Field(None, ge=0, le=MAX_INT64)
    gc: GcFigures | None = None
    gc_counts: list[Annotated[int, Field(ge=0, le=MAX_INT64)]] | None = Field(
        None, max_length=3, description="Objects tracked per gc generation."
    )
    cycles_found: int | None = Field(None, ge=0, le=MAX_INT64)
    tracemalloc_top: list[TracemallocSite] | None = Field(None, max_length=50)

    @field_validator("at")
    @classmethod
    def _at(cls, value: str | None) -> str | None:
        if value is not None:
            sample_time(value)  # raises with the reason
        return value


def sample_time(value: str) -> datetime:
    """A sample's `at`, parsed and bounded: no later than 5 minutes ahead of the server's
    clock (a sample from the future would freeze its process's alert state) and no older
    than the raw-sample retention (it would be pruned at once, or roll up into a month
    long gone)."""
    from django.conf import settings
    from django.utils import timezone
    from django.utils.dateparse import parse_datetime

    try:
        parsed = parse_datetime(value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value)
    except (ValueError, OverflowError):
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise ValueError("must be an ISO-8601 time with a timezone")
    now = timezone.now()
    if parsed > now + MAX_SAMPLE_SKEW:
        raise ValueError("must not be more than 5 minutes ahead of the server's clock")
    if parsed < now - timedelta(days=settings.MONITORING_RAW_RETENTION_DAYS):
        raise ValueError(f"must not be older than the raw-sample retention ({settings.MONITORING_RAW_RETENTION_DAYS} days)")
    return parsed


class MetricsPush(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    host: Annotated[str, StringConstraints(min_length=1, max_length=255)]
    samples: list[ProcessSample] = Field(min_length=1, max_length=1000)


ERROR_CODES = (
    "validation_error", "malformed_json", "unauthenticated", "forbidden", "not_found", "method_not_allowed",
    "already_decided", "idempotency_conflict", "already_approved", "payload_too_large", "unsupported_media_type",
    "rate_limited", "too_many_pending", "unavailable",
)


class ErrorBody(BaseModel):
    code: str = Field(description="Stable: " + ", ".join(ERROR_CODES) + ".", examples=list(ERROR_CODES))
    message: str
    details: dict[str, Any]


class ErrorResponse(BaseModel):
    error: ErrorBody


class Trigger(BaseModel):
    rule: Literal["memory_pressure", "delegation_depth", "circular_refs", "always"]
    threshold: float | int | None
    value: float | int | None
    fired: bool
    source: Literal["agent", "monitoring", "policy"] | None
    agent_value: float | int | None = Field(
        None, description="memory_pressure only: the agent's own value (null when it sent none)."
    )
    monitored_value: float | int | None = Field(
        None, description="memory_pressure only: its host's monitored pressure from a sample under 60 s old, or null."
    )


class Decision(BaseModel):
    outcome: Literal["approved", "rejected", "cancelled"]
    source: Literal["policy", "operator", "timeout", "agent", "standing"]
    by: str | None
    reason: str
    decided_at: str
    note: str = Field(default="", description="The operator's note to the agent, with an approval or a reject.")
    payload: dict[str, Any] | None = Field(
        default=None,
        description="Present only when an operator approved with changes: the payload the agent may run instead.",
    )
    receipt: str | None = Field(None, description="Signed decision receipt: a compact JWS (EdDSA), "
                                "verifiable with the keys at /api/v1/keys.")


class Approval(BaseModel):
    by: str
    at: str


class PolicyRef(BaseModel):
    operation: str
    version: int


class RequestResource(BaseModel):
    id: str
    agent: str
    operation: str
    summary: str
    payload: dict[str, Any]
    payload_sha256: str | None = Field(None, description="Hex SHA-256 of the payload's canonical JSON (RFC 8785).")
    metrics: dict[str, Any]
    status: Literal["pending", "approved", "rejected", "cancelled"]
    critical: bool
    trusted_bypass: bool = Field(description="A rule fired but the agent is trusted by the policy.")
    triggers: list[Trigger]
    policy: PolicyRef
    created_at: str
    deadline: str | None
    escalated_at: str | None
    timeout_action: Literal["approve", "reject"]
    required_approvals: int = Field(1, ge=1, description="How many different operators must approve.")
    approver_groups: list[str] = Field(
        default_factory=list, description="Groups whose members may decide (empty: every operator)."
    )
    approvals: list[Approval] = Field(default_factory=list, description="Operators' approvals so far, in order.")
    payload_changed_by: str | None = Field(
        None, description="The operator whose approval with changes set the payload that stands "
        "(decision.payload once approved); null while it stands as submitted.",
    )
    decision: Decision | None
    poll_after_ms: int | None


class RequestList(BaseModel):
    results: list[RequestResource]
    next_cursor: str | None


class ReceiptResponse(BaseModel):
    receipt: str = Field(description="A fresh compact JWS of the final decision.")


class Jwk(BaseModel):
    kty: Literal["OKP"]
    crv: Literal["Ed25519"]
    x: str
    kid: str
    alg: Literal["EdDSA"]
    use: Literal["sig"]


class Jwks(BaseModel):
    keys: list[Jwk]


class MetricsAccepted(BaseModel):
    accepted: int
