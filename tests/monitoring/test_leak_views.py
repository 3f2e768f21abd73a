from datetime import timedelta

import pytest
from django.utils import timezone

from monitoring.models import AgentSample, Alert, LeakFinding, LeakWeek

pytestmark = pytest.mark.django_db
PASSWORD = "correct horse battery"
MIB = 1 << 20
JSON = {"Accept": "application/json"}


def login(client, user):
    assert client.login(username=user.username, password=PASSWORD)
    return client


def finding(agent, **fields):
    now = timezone.now()
    return LeakFinding.objects.create(**{
        "agent": agent, "host": "box-1", "pid": 9, "process": "<i>crawler</i>", "slope_bytes_per_hour": 12 * MIB,
        "detected_at": now - timedelta(minutes=10), "confidence": 0.9, "last_seen_at": now, "rss_bytes": 500 * MIB,
        "exhaustion_at": now + timedelta(hours=40),
    } | fields)


def test_it_lists_findings_with_the_contracts_fields(client, operator, agent):
    f = finding(agent.agent)
    body = login(client, operator).get("/monitoring/leaks.json").json()
    assert body["findings"] == [{
        "id": f.id, "agent": agent.agent.name, "host": "box-1", "pid": 9, "process": "<i>crawler</i>",
        "status": "suspected", "slope_bytes_per_hour": 12 * MIB,
        "first_detected_at": body["findings"][0]["first_detected_at"], "exhaustion_at": body["findings"][0]["exhaustion_at"],
    }]


def test_an_operator_marks_a_finding_a_false_positive_once_with_a_reason(client, operator, agent):
    f = finding(agent.agent)
    login(client, operator)
    url = f"/monitoring/leaks/{f.id}/dismiss"
    missing = client.post(url, {"reason": "  "}, headers=JSON)
    assert missing.status_code == 400 and missing.json()["error"]["code"] == "validation_error"
    done = client.post(url, {"reason": "a cache filling on purpose"}, headers=JSON)
    assert done.status_code == 200 and done.json()["finding"]["status"] == "dismissed"
    again = client.post(url, {"reason": "again"}, headers=JSON)
    assert again.status_code == 409
    f.refresh_from_db()
    assert (f.status, f.dismissed_by, f.dismiss_reason) == ("dismissed", operator.username, "a cache filling on purpose")
    assert client.post("/monitoring/leaks/999999/dismiss", {"reason": "x"}, headers=JSON).status_code == 404
    page = client.get("/monitoring/").content.decode()
    assert "Marked a false positive by" in page and "a cache filling on purpose" in page


def test_a_form_post_is_redirected_back_to_the_page(client, operator, agent):
    f = finding(agent.agent)
    response = login(client, operator).post(f"/monitoring/leaks/{f.id}/dismiss", {"reason": "expected growth"})
    assert response.status_code == 302 and response["Location"] == "/monitoring/"


def test_managers_cannot_mark_false_positives(client, manager, agent):
    f = finding(agent.agent)
    login(client, manager)
    assert client.post(f"/monitoring/leaks/{f.id}/dismiss", {"reason": "x"}).status_code == 403
    f.refresh_from_db()
    assert f.status == "suspected"


def test_an_operator_marks_an_alert_a_false_positive(client, operator):
    now = timezone.now()
    alert = Alert.objects.create(host="box-1", severity="warning", value=85, threshold=80, peak=88,
                                 started_at=now - timedelta(minutes=2), raised_at=now - timedelta(minutes=1))
    login(client, operator)
    url = f"/monitoring/alerts/{alert.id}/false-positive"
    assert client.post(url, {}, headers=JSON).status_code == 400
    assert client.post(url, {"reason": "a backup job, expected"}, headers=JSON).status_code == 200
    assert client.post(url, {"reason": "again"}, headers=JSON).status_code == 409
    alert.refresh_from_db()
    assert (alert.false_positive_by, alert.false_positive_reason) == (operator.username, "a backup job, expected")
    assert alert.false_positive_at is not None


def test_the_page_shows_a_finding_with_its_evidence_escaped(client, operator, agent):
    f = finding(agent.agent)
    AgentSample.objects.create(agent=agent.agent, host="box-1", pid=9, process="crawler", rss_bytes=5 * MIB,
                               at=f.detected_at, gc_uncollectable=3, cycles_found=41,
                               tracemalloc_top=[{"where": "<b>app.py</b>:12", "size_bytes": 4096, "count": 8}])
    html = login(client, operator).get("/monitoring/").content.decode()
    assert "&lt;i&gt;crawler&lt;/i&gt;" in html and "<i>crawler" not in html
    assert "&lt;b&gt;app.py&lt;/b&gt;:12" in html
    assert 'class="ev-cycles">41<' in html and 'class="ev-uncollectable">3<' in html
    assert "12.0 MiB/h" in html
    assert "Mark false positive" in html


def test_a_findings_series_comes_with_its_fitted_line(client, operator, agent):
    f = finding(agent.agent)
    for i in range(10):
        AgentSample.objects.create(agent=agent.agent, host="box-1", pid=9, process="crawler",
                                   at=f.last_seen_at - timedelta(minutes=i), rss_bytes=(500 - i) * MIB)
    body = login(client, operator).get(f"/monitoring/leaks/{f.id}.json").json()
    assert len(body["points"]) == 10
    assert body["fit"][-1]["rss"] == 500 * MIB
    # The fitted line spans the judged span: 60 minutes (MONITORING_LEAK_SPAN_MINUTES).
    assert body["fit"][0]["rss"] == pytest.approx(500 * MIB - 12 * MIB * 1.0, rel=1e-6)
    assert client.get("/monitoring/leaks/424242.json").status_code == 404


def test_the_weekly_page_shows_stored_weeks(client, manager):
    LeakWeek.objects.create(week="2026-11-16", findings=4, processes=3, fastest_bytes_per_hour=25 * MIB,
                            cleared=2, dismissed=1)
    html = login(client, manager).get("/monitoring/leaks/weekly/").content.decode()
    assert "2026-11-16" in html and "25.0 MiB/h" in html
