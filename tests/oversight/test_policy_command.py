"""python manage.py policy OPERATION [--set key=value]…"""

import json

import pytest
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.core.management.base import CommandError

from oversight.models import AuditEvent, Policy
from oversight.policy import ensure_default_policy

pytestmark = pytest.mark.django_db


def run(*args, capsys):
    call_command("policy", *args)
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    return json.loads(out[0])


def test_it_prints_the_current_policy_as_one_json_object(capsys):
    ensure_default_policy()
    shown = run("*", capsys=capsys)
    assert shown["operation"] == "*" and shown["version"] == 1
    assert shown["required_approvals"] == 1 and shown["timeout_action"] == "approve"
    assert shown["min_timeout_seconds"] == 60 and shown["missing_metrics"] == "ignore"


def test_set_writes_an_audited_version_by_cli(capsys):
    Group.objects.create(name="dba")
    shown = run("drop-db", "--set", "required_approvals=2", "--set", "timeout_action=reject",
                "--set", "approver_groups=dba", "--set", "memory_pressure=null", "--set", "always=true", capsys=capsys)
    assert (shown["operation"], shown["version"], shown["required_approvals"]) == ("drop-db", 1, 2)
    assert shown["approver_groups"] == ["dba"] and shown["memory_pressure"] is None and shown["always"] is True
    policy = Policy.objects.get(operation="drop-db", is_current=True)
    event = AuditEvent.objects.get(policy=policy, kind="policy_changed")
    assert event.actor == "cli" and policy.created_by == "cli"


@pytest.mark.parametrize("assignment", [
    "bogus=1", "required_approvals=0", "required_approvals=two", "memory_pressure=101", "always=maybe",
    "missing_metrics=panic", "timeout_action=later", "escalate_after=2", "approver_groups=nosuchgroup",
    "required_approvals=2",  # with timeout approve: refused
    "no-equals-sign",
])
def test_a_bad_key_or_value_exits_2_and_writes_nothing(assignment, capsys):
    ensure_default_policy()
    with pytest.raises(CommandError) as error:
        call_command("policy", "*", "--set", assignment)
    assert error.value.returncode == 2
    assert "\n" not in str(error.value)
    assert Policy.objects.count() == 1 and not AuditEvent.objects.exists()


def test_it_exits_2_from_the_command_line(tmp_path):
    import os
    import subprocess
    import sys

    from django.conf import settings

    env = dict(os.environ, OVERSIGHT_VAR_DIR=str(tmp_path), DATABASE_URL=f"sqlite:///{tmp_path}/db.sqlite3")
    if settings.DATABASES["default"]["ENGINE"].endswith("sqlite3"):
        subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], env=env, check=True)
        done = subprocess.run([sys.executable, "manage.py", "policy", "*", "--set", "bogus=1"],
                              env=env, capture_output=True, text=True)
        assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1


def test_notify_and_reminders_are_keys_and_credentials_are_printed_masked(capsys):
    ensure_default_policy()
    shown = run("deploy", "--set", "notify=ops@example.org,https://hooks.example/t0ken",
                "--set", "remind_every_seconds=300", capsys=capsys)
    assert shown["notify"] == ["ops@example.org", "https://hooks.example/***"]
    assert shown["remind_every_seconds"] == 300
    policy = Policy.objects.get(operation="deploy", is_current=True)
    assert "t0ken" not in json.dumps(policy.notify)
    assert "t0ken" not in json.dumps(list(AuditEvent.objects.values_list("data", flat=True)))
    with pytest.raises(CommandError):
        call_command("policy", "deploy", "--set", "notify=file:///etc/passwd")


def test_it_sets_the_standing_and_receipt_keys(capsys):
    ensure_default_policy()
    shown = run("*", "--set", "max_standing_seconds=3600", "--set", "receipt_ttl_seconds=900", capsys=capsys)
    assert (shown["max_standing_seconds"], shown["receipt_ttl_seconds"]) == (3600, 900)
    with pytest.raises(CommandError):
        call_command("policy", "*", "--set", "receipt_ttl_seconds=5")


@pytest.mark.parametrize("operation", ["delete\n", "*\n"])
def test_an_operation_name_with_a_trailing_newline_exits_2(operation, capsys):
    """No submission can name it (the API's pattern is matched whole): a policy for it
    would leave the operation meant under the default policy, unnoticed."""
    ensure_default_policy()
    with pytest.raises(CommandError) as error:
        call_command("policy", operation, "--set", "always=true")
    assert error.value.returncode == 2
    assert Policy.objects.count() == 1
