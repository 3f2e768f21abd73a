"""Who may decide one request: an operator, in the policy's approver groups if it names
any, and never the owner of the agent that asks.

The groups and the owner are the snapshot taken when the request was evaluated, so a
later policy edit or a change of owner never widens who decides it. Superusers are
operators here, not above the rule.
"""

from __future__ import annotations

from oversight.models import OversightRequest
from oversight.roles import OPERATORS, has_role


def groups_of(user) -> set[str]:
    names = getattr(user, "_oversight_groups", None)
    if names is None:
        names = set(user.groups.values_list("name", flat=True))
        user._oversight_groups = names
    return names


def refusal(user, req: OversightRequest) -> str:
    """Why `user` may not decide `req` ("" when they may)."""
    if not has_role(user, OPERATORS):
        return "Only operators decide requests."
    if req.owner_username and user.get_username() == req.owner_username:
        return "You own the agent that asks: another operator decides its requests."
    if req.approver_groups and not (groups_of(user) & set(req.approver_groups)):
        return f"Only members of {', '.join(req.approver_groups)} decide requests of this policy."
    return ""


def may_decide(user, req: OversightRequest) -> bool:
    return not refusal(user, req)


def has_approved(user, req: OversightRequest) -> bool:
    return any(a.get("by") == user.get_username() for a in (req.approvals or []))
