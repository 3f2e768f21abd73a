"""The keys of a policy as data: one parser per key, shared by `manage.py policy --set`
and the managers' /policies/ editor.

A new key is one row in KEYS (and a model field). Each parser takes the text a person
typed and returns the value to store, or raises ValueError with a one-line reason.
`check` holds the rules between keys; every edit passes through it.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from oversight.models import MissingMetrics, TimeoutAction

MAX_TIMEOUT_SECONDS = 7 * 24 * 3600
MAX_APPROVALS = 10
# Agent names are free text (1–100 characters) but for control characters and commas.
AGENT_NAME_RE = re.compile(r"^[^\x00-\x1f\x7f,]{1,100}$")
GROUP_NAME_RE = re.compile(r"^[^\x00-\x1f\x7f,]{1,150}$")
CONTACT_RE = re.compile(r"^\S{1,254}$")
NULLS = ("", "null", "none", "off")


def _optional(parse: Callable[[str], object]) -> Callable[[str], object]:
    def parser(text: str):
        return None if text.strip().lower() in NULLS else parse(text.strip())

    return parser


def _number(low: float, high: float, *, whole: bool) -> Callable[[str], object]:
    def parse(text: str):
        text = text.strip()
        try:
            value = int(text) if whole else float(text)
        except ValueError:
            raise ValueError("must be a whole number" if whole else "must be a number") from None
        if value != value or not low <= value <= high:  # NaN, or out of range
            raise ValueError(f"must be between {low:g} and {high:g}")
        return value

    return parse


def _boolean(text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "on", "1", "yes"):
        return True
    if value in ("false", "off", "0", "no", ""):
        return False
    raise ValueError("must be true or false")


def _choice(choices: list[str]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text.strip() not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return text.strip()

    return parse


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError("must be a fraction such as 0.5, or null") from None
    if not 0 < value < 1:
        raise ValueError("must be strictly between 0 and 1 (a fraction of the timeout), or null")
    return value


def _names(pattern: re.Pattern, what: str, *, exists: Callable[[list[str]], list[str]] | None = None):
    def parse(text: str) -> list[str]:
        names = [n.strip() for n in re.split(r"[\r\n,]+", text) if n.strip()]
        bad = [n for n in names if not pattern.match(n)]
        if bad:
            raise ValueError(f"not a valid {what}: {bad[0][:40]}")
        if len(names) > 200:
            raise ValueError(f"at most 200 {what}s")
        names = list(dict.fromkeys(names))
        missing = exists(names) if exists else []
        if missing:
            raise ValueError(f"no such {what}: {missing[0][:40]}")
        return names

    return parse


def _missing_groups(names: list[str]) -> list[str]:
    from django.contrib.auth.models import Group

    known = set(Group.objects.filter(name__in=names).values_list("name", flat=True))
    return [n for n in names if n not in known]


def _notify(text: str) -> list[str]:
    """Notification targets (comma or newline separated; empty: none), stored sealed."""
    from oversight.notifications import parse_notify

    return parse_notify(text)


def _remind_every(text: str) -> int | None:
    from oversight.notifications import parse_remind_every

    return parse_remind_every(text)


KEYS: dict[str, Callable[[str], object]] = {
    "memory_pressure": _optional(_number(0, 100, whole=False)),
    "delegation_depth": _optional(_number(0, 10**9, whole=True)),
    "circular_refs": _optional(_number(0, 10**9, whole=True)),
    "always": _boolean,
    "missing_metrics": _choice(MissingMetrics.values),
    "timeout_seconds": _number(1, MAX_TIMEOUT_SECONDS, whole=True),
    "min_timeout_seconds": _number(1, MAX_TIMEOUT_SECONDS, whole=True),
    "timeout_action": _choice(TimeoutAction.values),
    "escalate_after": _optional(_fraction),
    "required_approvals": _number(1, MAX_APPROVALS, whole=True),
    "reject_cooldown_seconds": _number(0, MAX_TIMEOUT_SECONDS, whole=True),
    "max_standing_seconds": _number(0, MAX_TIMEOUT_SECONDS, whole=True),
    "receipt_ttl_seconds": _number(60, 86400, whole=True),
    "approver_groups": _names(GROUP_NAME_RE, "group", exists=_missing_groups),
    "trusted_agents": _names(AGENT_NAME_RE, "agent name"),
    "escalation_contacts": _names(CONTACT_RE, "contact"),
    "notify": _notify,
    "remind_every_seconds": _optional(_remind_every),
}


def parse(key: str, text: str):
    """The value of `key` typed as `text`; KeyError for an unknown key, ValueError for a bad value."""
    return KEYS[key](text)


def check(settings: dict) -> dict[str, str]:
    """The rules between keys, as {key: why} (empty when the settings hold together)."""
    errors: dict[str, str] = {}
    guarded = (settings.get("required_approvals") or 1) >= 2 or bool(settings.get("approver_groups"))
    if guarded and settings.get("timeout_action") != TimeoutAction.REJECT:
        # A quorum (or a named group) that is not reached in time must reject, or the
        # timeout would approve what the people required never approved.
        errors["timeout_action"] = "must be reject when required_approvals is 2 or more or approver_groups is set"
    return errors


def warnings(settings: dict) -> list[str]:
    """Allowed, but worth a manager's second look."""
    out = []
    if (settings.get("min_timeout_seconds") or 0) < 60:
        out.append("Agents may shorten the time people get to decide below 60 seconds (min_timeout_seconds).")
    if (settings.get("required_approvals") or 1) > 1 and settings.get("timeout_action") == TimeoutAction.APPROVE:
        out.append("The timeout approves even when the required approvals were not given.")
    if settings.get("timeout_action") == TimeoutAction.APPROVE and (settings.get("timeout_seconds") or 0) < 60:
        out.append("The timeout approves after less than a minute.")
    return out
