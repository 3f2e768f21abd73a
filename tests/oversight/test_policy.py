"""Policy evaluation: strict thresholds, fallback to `*`, trusted agents, snapshots."""

import pytest

from oversight import actions
from oversight.models import Policy, Status
from oversight.policy import current_policy, evaluate


def _fired(policy, **metrics):
    result = evaluate(policy, agent_name="a", metrics=metrics)
    return {t["rule"] for t in result.triggers if t["fired"]}, result.critical


@pytest.fixture
def default_policy(db):
    return current_policy("anything")


@pytest.mark.parametrize(
    ("rule", "at", "under", "over"),
    [("memory_pressure", 80, 79.99, 80.01), ("delegation_depth", 4, 3, 5), ("circular_refs", 3, 2, 4)],
)
def test_it_fires_each_rule_only_strictly_over_its_threshold(default_policy, rule, at, under, over):
    assert _fired(default_policy, **{rule: at}) == (set(), False)
    assert _fired(default_policy, **{rule: under}) == (set(), False)
    assert _fired(default_policy, **{rule: over}) == ({rule}, True)


def test_it_records_every_rule_with_threshold_value_and_source(default_policy):
    result = evaluate(default_policy, agent_name="a", metrics={"memory_pressure": 83.5, "delegation_depth": 5, "circular_refs": 1})
    assert result.triggers == [
        {"rule": "memory_pressure", "threshold": 80.0, "value": 83.5, "fired": True, "source": "agent",
         "agent_value": 83.5, "monitored_value": None},
        {"rule": "delegation_depth", "threshold": 4, "value": 5, "fired": True, "source": "agent"},
        {"rule": "circular_refs", "threshold": 3, "value": 1, "fired": False, "source": "agent"},
    ]
    assert result.fired_rules == "memory_pressure+delegation_depth"


def test_a_missing_value_does_not_fire(default_policy):
    result = evaluate(default_policy, agent_name="a", metrics={})
    assert not result.critical
    assert all(t["value"] is None and not t["fired"] for t in result.triggers)


def test_it_judges_the_larger_of_the_agents_and_the_monitored_pressure(default_policy):
    from_monitoring = evaluate(default_policy, agent_name="a", metrics={}, host_pressure=91.0)
    assert from_monitoring.triggers[0] == {
        "rule": "memory_pressure", "threshold": 80.0, "value": 91.0, "fired": True, "source": "monitoring",
        "agent_value": None, "monitored_value": 91.0,
    }
    understated = evaluate(default_policy, agent_name="a", metrics={"memory_pressure": 10}, host_pressure=91.0)
    assert understated.critical
    assert understated.triggers[0] | {} == {
        "rule": "memory_pressure", "threshold": 80.0, "value": 91.0, "fired": True, "source": "monitoring",
        "agent_value": 10, "monitored_value": 91.0,
    }
    higher = evaluate(default_policy, agent_name="a", metrics={"memory_pressure": 95}, host_pressure=50.0)
    assert higher.triggers[0]["value"] == 95 and higher.triggers[0]["source"] == "agent"
    assert higher.triggers[0]["monitored_value"] == 50.0


def test_with_missing_metrics_critical_an_absent_value_fires(db):
    policy = actions.do_change_policy("deploy", {"missing_metrics": "critical"}, by="maria")
    assert _fired(policy) == ({"memory_pressure", "delegation_depth", "circular_refs"}, True)
    assert _fired(policy, memory_pressure=1, delegation_depth=1, circular_refs=1) == (set(), False)


def test_a_trusted_agent_never_bypasses_always_or_a_quorum(db):
    always = actions.do_change_policy("deploy", {"always": True, "trusted_agents": ["ci-bot"]}, by="maria")
    assert evaluate(always, agent_name="ci-bot", metrics={}).critical
    quorum = actions.do_change_policy(
        "drop-db", {"required_approvals": 2, "timeout_action": "reject", "trusted_agents": ["ci-bot"]}, by="maria"
    )
    result = evaluate(quorum, agent_name="ci-bot", metrics={"delegation_depth": 9})
    assert result.critical and not result.trusted_bypass


def test_always_sends_every_request_to_a_human(db):
    policy = actions.do_change_policy("deploy", {"always": True}, by="maria")
    assert _fired(policy) == ({"always"}, True)


def test_it_falls_back_to_the_default_policy(db):
    actions.do_change_policy("scrape", {"delegation_depth": 10}, by="maria")
    assert current_policy("scrape").operation == "scrape"
    assert current_policy("delegate").operation == "*"


def test_trusted_agents_bypass_the_policy(db):
    policy = actions.do_change_policy("*", {"trusted_agents": ["ci-bot"]}, by="maria")
    trusted = evaluate(policy, agent_name="ci-bot", metrics={"delegation_depth": 9})
    assert not trusted.critical and trusted.trusted_bypass
    other = evaluate(policy, agent_name="someone", metrics={"delegation_depth": 9})
    assert other.critical and not other.trusted_bypass


def test_a_policy_edit_makes_a_new_version_and_leaves_old_requests_alone(agent):
    first, _ = actions.do_submit(agent.agent, actions.Submission("delegate", "s", {}, {"delegation_depth": 5}))
    assert first.critical and first.policy_version == 1
    actions.do_change_policy("*", {"delegation_depth": 10}, by="maria", note="fewer reviews")
    second, _ = actions.do_submit(agent.agent, actions.Submission("delegate", "s", {}, {"delegation_depth": 5}))
    assert not second.critical and second.policy_version == 2 and second.status == Status.APPROVED
    first.refresh_from_db()
    assert first.policy_version == 1 and first.triggers[1]["threshold"] == 4 and first.critical
    assert Policy.objects.filter(operation="*").count() == 2
    assert Policy.objects.get(operation="*", is_current=True).version == 2
