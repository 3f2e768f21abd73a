"""python manage.py create_agent NAME [--owner USER] [--host H]… [--operations LIST] [--max-pending N]"""

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from oversight.models import Agent, ApiKey

pytestmark = pytest.mark.django_db


def test_it_sets_owner_hosts_operations_and_limit_and_prints_the_key_last(capsys, operator):
    call_command("create_agent", "ops-bot", "--owner", "olivia", "--host", "db-1", "--host", "db-2",
                 "--operations", "deploy,drop-db", "--max-pending", "5")
    raw = capsys.readouterr().out.strip().splitlines()[-1]
    agent = Agent.objects.get(name="ops-bot")
    assert (agent.owner, agent.hosts, agent.operations, agent.max_pending) == (
        operator, ["db-1", "db-2"], ["deploy", "drop-db"], 5,
    )
    assert ApiKey.objects.get(agent=agent).matches(raw)


def test_it_changes_an_existing_agent_and_still_prints_a_new_key(capsys, operator):
    call_command("create_agent", "ops-bot")
    capsys.readouterr()
    call_command("create_agent", "ops-bot", "--owner", "olivia", "--max-pending", "3")
    raw = capsys.readouterr().out.strip().splitlines()[-1]
    agent = Agent.objects.get(name="ops-bot")
    assert agent.owner == operator and agent.max_pending == 3 and agent.hosts == []
    assert agent.keys.count() == 2 and any(k.matches(raw) for k in agent.keys.all())


@pytest.mark.parametrize("args", [("--owner", "nobody"), ("--operations", "Bad Op"), ("--max-pending", "0")])
def test_it_refuses_bad_options(args):
    with pytest.raises(CommandError):
        call_command("create_agent", "ops-bot", *args)
    assert not Agent.objects.exists()
