from datetime import timedelta

import pytest
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from monitoring.ingest import store_agent_samples
from monitoring.models import Alert, HostSample
from oversight import actions
from oversight.models import AuditEvent, OversightRequest

pytestmark = pytest.mark.django_db


def scrape(client, **headers):
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def request_at(agent, status, source, seconds, *, escalated=False):
    from oversight.models import Policy

    now = timezone.now()
    return OversightRequest.objects.create(
        agent=agent, operation="delegate", summary="x", status=status, decision_source=source,
        policy=Policy.objects.get(operation="*", is_current=True), policy_operation="*", policy_version=1,
        timeout_action="approve", created_at=now - timedelta(seconds=seconds),
        decided_at=now if status != "pending" else None, escalated_at=now if escalated else None,
    )


def test_it_reports_requests_decisions_and_time_to_decision(client, agent):
    a = agent.agent
    request_at(a, "pending", "", 3, escalated=True)
    request_at(a, "approved", "policy", 0)
    request_at(a, "rejected", "operator", 20)
    request_at(a, "approved", "operator", 100)
    request_at(a, "approved", "timeout", 300)
    AuditEvent.objects.create(kind=AuditEvent.Kind.CALLBACK_FAILED, request=OversightRequest.objects.first())
    m = scrape(client)
    assert m[("oversight_pending_requests", ())] == 1
    assert m[("oversight_decisions_total", (("outcome", "approved"), ("source", "operator")))] == 1
    assert m[("oversight_decisions_total", (("outcome", "rejected"), ("source", "operator")))] == 1
    assert m[("oversight_timeouts_total", ())] == 1
    assert m[("oversight_escalations_total", ())] == 1
    assert m[("oversight_callback_failures_total", ())] == 1
    operator = (("source", "operator"),)
    assert m[("oversight_time_to_decision_seconds_count", operator)] == 2
    assert m[("oversight_time_to_decision_seconds_bucket", (("le", "15.0"), *operator))] == 0
    assert m[("oversight_time_to_decision_seconds_bucket", (("le", "30.0"), *operator))] == 1
    assert m[("oversight_time_to_decision_seconds_bucket", (("le", "+Inf"), *operator))] == 2
    assert m[("oversight_time_to_decision_seconds_sum", operator)] == pytest.approx(120, abs=1)


def test_it_reports_hosts_alerts_and_samples_ingested(client, agent):
    HostSample.objects.create(host="box", at=timezone.now(), pressure=83.5, total_bytes=100, available_bytes=16,
                              used_bytes=84, psi_some_avg10=2.5, psi_full_avg10=0.5)
    HostSample.objects.create(host="gone", at=timezone.now() - timedelta(hours=1), pressure=99, total_bytes=1,
                              available_bytes=0, used_bytes=1)
    now = timezone.now()
    Alert.objects.create(host="box", severity="warning", value=83.5, threshold=80, peak=84, started_at=now, raised_at=now)
    before = scrape(client)
    store_agent_samples(agent.agent, "box", [{"pid": 1, "rss_bytes": 5}, {"pid": 1, "rss_bytes": 6}])
    m = scrape(client)
    assert m[("oversight_host_memory_pressure_percent", (("host", "box"),))] == 83.5
    assert ("oversight_host_memory_pressure_percent", (("host", "gone"),)) not in m
    assert m[("oversight_host_memory_psi_avg10", (("host", "box"), ("kind", "some")))] == 2.5
    assert m[("oversight_alerts_firing", (("severity", "warning"),))] == 1
    assert m[("oversight_alerts_firing", (("severity", "critical"),))] == 0
    key = ("oversight_samples_ingested_total", (("kind", "agent"),))
    assert m[key] == before[key] + 2


def test_it_requires_the_token_when_one_is_set(client, settings):
    settings.OVERSIGHT_METRICS_TOKEN = "s3cret"
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert scrape(client, Authorization="Bearer s3cret") is not None
    assert client.post("/metrics", headers={"Authorization": "Bearer s3cret"}).status_code == 405


def test_it_counts_real_decisions(client, agent, operator):
    from oversight.actions import Submission

    req, _ = actions.do_submit(agent.agent, Submission("delegate", "x", {}, {"memory_pressure": 95}))
    actions.do_decide(req.id, outcome="approved", source="operator", by=operator.username, reason="fine")
    m = scrape(client)
    assert m[("oversight_decisions_total", (("outcome", "approved"), ("source", "operator")))] == 1


def decided_at(agent, source, when, *, took=10):
    req = request_at(agent, "approved", source, 0)
    OversightRequest.objects.filter(id=req.id).update(decided_at=when, created_at=when - timedelta(seconds=took))
    return req


def test_it_folds_old_decisions_into_a_checkpoint_and_counts_each_once(client, agent):
    from monitoring.metrics import FOLD_MARGIN
    from monitoring.models import MetricsCheckpoint

    now = timezone.now()
    for minutes in (60, 30, 1):
        decided_at(agent.agent, "operator", now - timedelta(minutes=minutes))
    key = ("oversight_decisions_total", (("outcome", "approved"), ("source", "operator")))
    assert scrape(client)[key] == 3
    checkpoint = MetricsCheckpoint.objects.get()
    assert now - FOLD_MARGIN <= checkpoint.watermark <= timezone.now() - FOLD_MARGIN
    assert checkpoint.figures["decisions"] == {"operator/approved": 2}
    # Scraped again, nothing is counted twice; a new decision is counted at once.
    assert scrape(client)[key] == 3
    decided_at(agent.agent, "operator", timezone.now())
    assert scrape(client)[key] == 4


def test_a_scrape_does_not_read_what_the_checkpoint_holds(client, agent):
    """Incremental, not a full scan: a folded row is not aggregated again (were an old row
    changed behind the audit's back, the counter would not move)."""
    old = decided_at(agent.agent, "operator", timezone.now() - timedelta(hours=2))
    key = ("oversight_decisions_total", (("outcome", "approved"), ("source", "operator")))
    assert scrape(client)[key] == 1
    OversightRequest.objects.filter(id=old.id).update(decision_source="timeout")
    again = scrape(client)
    assert again[key] == 1
    assert ("oversight_decisions_total", (("outcome", "approved"), ("source", "timeout"))) not in again


def test_the_histogram_adds_checkpoint_and_recent_rows(client, agent):
    now = timezone.now()
    decided_at(agent.agent, "operator", now - timedelta(hours=1), took=20)
    decided_at(agent.agent, "operator", now, took=100)
    m = scrape(client)
    operator = (("source", "operator"),)
    assert m[("oversight_time_to_decision_seconds_count", operator)] == 2
    assert m[("oversight_time_to_decision_seconds_bucket", (("le", "30.0"), *operator))] == 1
    assert m[("oversight_time_to_decision_seconds_bucket", (("le", "120.0"), *operator))] == 2
    assert m[("oversight_time_to_decision_seconds_sum", operator)] == pytest.approx(120, abs=1)


@pytest.mark.django_db(transaction=True)
def test_scrapes_folding_at_the_same_time_count_each_decision_once(agent):
    import threading

    from django.db import connection

    from monitoring.metrics import counted_figures
    from monitoring.models import MetricsCheckpoint

    now = timezone.now()
    for minutes in range(10, 70, 2):
        decided_at(agent.agent, "operator", now - timedelta(minutes=minutes))
    results, errors = [], []
    start = threading.Barrier(6)

    def scrape_once():
        try:
            start.wait()
            results.append(counted_figures(now)["decisions"]["operator/approved"])
        except Exception as error:
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=scrape_once) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert results == [30] * 6
    assert MetricsCheckpoint.objects.get().figures["decisions"] == {"operator/approved": 30}
