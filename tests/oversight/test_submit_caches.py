"""The process's copy of the current policies is never used after an edit, whether the
edit is made in another process (`manage.py policy`) or in place in the database."""

import subprocess
import sys
import uuid

import httpx
import pytest

from oversight import actions, policy
from oversight.models import Agent, Policy
from oversight.policy import current_policy, ensure_default_policy


def _routine(operation: str) -> dict:
    return {"operation": operation, "summary": "s", "metrics": {"delegation_depth": 1}}


@pytest.mark.live
def test_a_warm_server_follows_a_policy_edited_by_another_process(live, agent):
    operation = f"op-{uuid.uuid4().hex[:8]}"
    actions.do_change_policy(operation, {}, by="test")

    def submit() -> dict:
        response = httpx.post(live.url + "/api/v1/requests", headers=agent.headers, json=_routine(operation),
                              timeout=10)
        assert response.status_code == 201, response.text
        return response.json()

    assert submit()["status"] == "approved"  # the server now holds its copy
    assert submit()["status"] == "approved"

    subprocess.run([sys.executable, "manage.py", "policy", operation, "--set", "always=true"],
                   env=live.env, check=True, capture_output=True)
    assert submit()["status"] == "pending"  # the next submission follows the new version

    # A setting changed in place (no new version row) is seen too.
    Policy.objects.filter(operation=operation, is_current=True).update(always=False)
    assert submit()["status"] == "approved"


@pytest.mark.django_db
def test_the_copy_is_reused_until_a_row_changes_and_never_after():
    ensure_default_policy()
    first = current_policy("anything")
    assert current_policy("anything") is first  # unchanged rows: the same objects

    Policy.objects.filter(pk=first.pk).update(reject_cooldown_seconds=7)
    changed = current_policy("anything")
    assert changed is not first and changed.reject_cooldown_seconds == 7

    actions.do_change_policy("*", {"reject_cooldown_seconds": 9}, by="test")
    newer = current_policy("anything")
    assert newer.version == changed.version + 1 and newer.reject_cooldown_seconds == 9

    Policy.objects.filter(pk=newer.pk).update(is_current=False)
    assert policy.current_policies().get("*") is None


# --- The process's copy of the caller's key (oversight/api/submitread.py) ------------------


@pytest.mark.live
def test_a_warm_server_refuses_a_key_revoked_by_another_process_at_once(live, agent):
    def submit() -> httpx.Response:
        return httpx.post(live.url + "/api/v1/requests", headers=agent.headers, json=_routine("scrape"), timeout=10)

    for _ in range(3):  # every worker of the server now holds its copy of the key
        assert submit().status_code == 201

    subprocess.run([sys.executable, "manage.py", "revoke_agent", agent.name],
                   env=live.env, check=True, capture_output=True)
    refused = submit()
    assert refused.status_code == 401, refused.text
    assert refused.json()["error"]["message"] == "This API key has been revoked."


@pytest.mark.live
def test_a_warm_server_follows_an_agent_changed_in_place(live, agent):
    def submit() -> httpx.Response:
        return httpx.post(live.url + "/api/v1/requests", headers=agent.headers, json=_routine("scrape"), timeout=10)

    for _ in range(3):
        assert submit().status_code == 201
    Agent.objects.filter(pk=agent.agent.pk).update(operations=["deploy"])
    refused = submit()
    assert refused.status_code == 403, refused.text


@pytest.mark.django_db
def test_the_key_copy_is_reused_until_its_row_changes(agent):
    from django.utils import timezone

    from oversight.api import submitread
    from oversight.models import ApiKey, hash_key

    digest = hash_key(agent.key)
    now = timezone.now()
    first = submitread.read(digest, "scrape", "0" * 64, now)
    assert first.key is not None and first.key.agent.name == agent.name
    assert submitread.read(digest, "scrape", "0" * 64, now).key is first.key  # the same objects

    Agent.objects.filter(pk=agent.agent.pk).update(max_pending=3)
    changed = submitread.read(digest, "scrape", "0" * 64, now).key
    assert changed is not first.key and changed.agent.max_pending == 3

    ApiKey.objects.filter(digest=digest).update(revoked_at=now)
    revoked = submitread.read(digest, "scrape", "0" * 64, now)
    assert revoked.key is None and revoked.revoked

    unknown = submitread.read(hash_key("no such key"), "scrape", "0" * 64, now)
    assert unknown.key is None and not unknown.revoked
