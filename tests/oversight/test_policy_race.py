"""Two managers saving the same policy at the same moment: both edits are kept, one
after the other, never a 500 (a real race, on PostgreSQL too)."""

import threading

import pytest
from django.db import close_old_connections

from oversight import actions
from oversight.models import AuditEvent, Policy
from oversight.policy import ensure_default_policy

pytestmark = pytest.mark.django_db(transaction=True)

EDITORS = 6


def race(operation: str, *, rounds: int = 3) -> list:
    outcomes = []
    for round_ in range(rounds):
        barrier = threading.Barrier(EDITORS)

        def edit(n: int, barrier=barrier, round_=round_) -> None:
            try:
                barrier.wait()
                actions.do_change_policy(operation, {"timeout_seconds": 60 + n + 10 * round_}, by=f"m{n}")
                outcomes.append("ok")
            except Exception as exc:  # what the race produced is the result
                outcomes.append(repr(exc))
            finally:
                close_old_connections()

        threads = [threading.Thread(target=edit, args=(n,)) for n in range(EDITORS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return outcomes


@pytest.mark.parametrize("existing", [True, False], ids=["existing-operation", "new-operation"])
def test_it_keeps_every_one_of_simultaneous_policy_edits(existing):
    ensure_default_policy()
    if existing:
        actions.do_change_policy("delegate", {"timeout_seconds": 30}, by="setup")
    outcomes = race("delegate")

    assert outcomes == ["ok"] * len(outcomes)
    versions = list(Policy.objects.filter(operation="delegate").order_by("version").values_list("version", flat=True))
    assert versions == list(range(1, len(versions) + 1))
    assert len(versions) == len(outcomes) + existing
    assert Policy.objects.filter(operation="delegate", is_current=True).count() == 1
    audited = AuditEvent.objects.filter(kind=AuditEvent.Kind.POLICY_CHANGED, policy__operation="delegate").count()
    assert audited == len(versions)
