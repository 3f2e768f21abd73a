"""The review's figures on hand-built months with known answers."""

from __future__ import annotations

import random
from datetime import date, timedelta

import pytest

from oversight.models import MonthlyReview, Source, Status
from oversight.reviews import reports
from tests.conftest import make_agent
from tests.oversight.reviews.helpers import at, make_request

pytestmark = pytest.mark.django_db

NOV = date(2026, 11, 1)
DEEP = {"delegation_depth": 5}
HOT = {"memory_pressure": 91.0}


@pytest.fixture
def scraper(db):
    return make_agent("scraper-7").agent


def nov(**kwargs) -> dict:
    return reports.month_figures(NOV, now=at("2026-12-15 00:00"), **kwargs)


def test_it_measures_the_original_designs_oversight_coverage(scraper):
    # The design's test: 6 operations, 3 of which needed oversight → 50 %.
    for i, metrics in enumerate([DEEP, HOT, {"circular_refs": 4}, {}, {"delegation_depth": 1}, {}]):
        make_request(scraper, at(f"2026-11-0{i + 1} 10:00"), operation=f"op{i}", metrics=metrics)
    headline = nov()["headline"]
    assert (headline["requests"], headline["critical"], headline["critical_share"]) == (6, 3, 0.5)


def test_it_places_requests_by_their_utc_submission_month(scraper):
    make_request(scraper, at("2026-10-31 23:59:59"))
    make_request(scraper, at("2026-11-01 00:00"))
    make_request(scraper, at("2026-11-30 23:59:59"))
    make_request(scraper, at("2026-12-01 00:00"))
    assert nov()["headline"]["requests"] == 2
    assert reports.month_figures(date(2026, 10, 1))["headline"]["requests"] == 1
    assert reports.month_figures(date(2026, 12, 1))["headline"]["requests"] == 1


def test_it_counts_a_request_decided_in_the_next_month_where_it_was_submitted(scraper):
    make_request(scraper, at("2026-11-30 23:58"), metrics=DEEP, outcome=Status.APPROVED,
                 source=Source.OPERATOR, by="olivia", after=240)
    figures = nov()
    assert figures["headline"]["operator_approved"] == 1
    assert figures["headline"]["ttd_p50"] == 240.0
    assert reports.month_figures(date(2026, 12, 1))["headline"]["operator_approved"] == 0


def test_an_empty_month_has_zero_counts_and_no_made_up_times():
    headline = nov()["headline"]
    assert headline["requests"] == 0 and headline["critical"] == 0
    assert headline["critical_share"] is None and headline["ttd_p50"] is None and headline["ttd_max"] is None
    assert nov()["by_operation"] == [] and nov()["operators"] == []


def test_it_splits_outcomes_by_source_and_counts_escalations(scraper):
    t = at("2026-11-10 09:00")
    make_request(scraper, t)  # policy
    make_request(scraper, t, metrics=DEEP, trusted=True)  # bypass: approved by the policy
    make_request(scraper, t, metrics=DEEP, outcome=Status.APPROVED, source=Source.OPERATOR, by="olivia", after=30)
    make_request(scraper, t, metrics=DEEP, outcome=Status.REJECTED, source=Source.OPERATOR, by="oscar",
                 reason="Too deep", after=90, escalated_after=60)
    make_request(scraper, t, metrics=HOT, outcome=Status.APPROVED, source=Source.TIMEOUT, after=300, escalated_after=150)
    make_request(scraper, t, metrics=HOT, outcome=Status.REJECTED, source=Source.TIMEOUT, after=300)
    make_request(scraper, t, metrics=HOT, outcome=Status.CANCELLED, source=Source.AGENT, after=5)
    make_request(scraper, t, metrics=HOT)  # still pending
    h = nov()["headline"]
    assert h["requests"] == 8 and h["critical"] == 6 and h["trusted_bypasses"] == 1
    assert (h["policy_approved"], h["operator_approved"], h["operator_rejected"]) == (2, 1, 1)
    assert (h["timeout_approved"], h["timeout_rejected"], h["cancelled"], h["pending"]) == (1, 1, 1, 1)
    assert h["escalated"] == 2
    assert h["decided_before_escalation_share"] == round(1 / 6, 4)
    assert h["timed_out_share"] == round(2 / 6, 4)
    assert (h["ttd_p50"], h["ttd_max"]) == (60.0, 90.0)  # timeouts are not human decisions


def test_it_groups_by_operation_agent_and_rule_combination(scraper):
    writer = make_agent("writer-2").agent
    t = at("2026-11-10 09:00")
    make_request(scraper, t, operation="web_scrape", metrics=DEEP)
    make_request(scraper, t, operation="web_scrape", metrics=DEEP | HOT)
    make_request(writer, t, operation="delegate", metrics=HOT | {"circular_refs": 9})
    make_request(writer, t, operation="delegate", metrics={})
    figures = nov()
    ops = {row["name"]: row for row in figures["by_operation"]}
    assert (ops["web_scrape"]["requests"], ops["web_scrape"]["critical"]) == (2, 2)
    assert (ops["delegate"]["requests"], ops["delegate"]["critical_share"]) == (2, 0.5)
    agents = {row["name"]: row["requests"] for row in figures["by_agent"]}
    assert agents == {"scraper-7": 2, "writer-2": 2}
    combos = {row["name"]: row["requests"] for row in figures["by_rule"]["combinations"]}
    assert combos == {"delegation_depth": 1, "memory_pressure+delegation_depth": 1, "memory_pressure+circular_refs": 1}
    singles = {row["name"]: row["requests"] for row in figures["by_rule"]["rules"]}
    assert singles == {"memory_pressure": 2, "delegation_depth": 2, "circular_refs": 1, "always": 0}


def test_it_reports_each_operators_decisions_and_median_time(scraper):
    t = at("2026-11-10 09:00")
    for after in (10, 20, 60):
        make_request(scraper, t, metrics=DEEP, outcome=Status.APPROVED, source=Source.OPERATOR, by="olivia", after=after)
    make_request(scraper, t, metrics=DEEP, outcome=Status.REJECTED, source=Source.OPERATOR, by="olivia",
                 reason="Looks like a loop", after=100)
    make_request(scraper, t, metrics=DEEP, outcome=Status.REJECTED, source=Source.OPERATOR, by="oscar",
                 reason=" looks like a LOOP ", after=5)
    make_request(scraper, t, metrics=DEEP, outcome=Status.REJECTED, source=Source.OPERATOR, by="oscar",
                 reason="Unknown site", after=7)
    figures = nov()
    people = {row["name"]: row for row in figures["operators"]}
    assert (people["olivia"]["decisions"], people["olivia"]["approved"], people["olivia"]["rejected"]) == (4, 3, 1)
    assert people["olivia"]["ttd_p50"] == 40.0 and people["olivia"]["approve_share"] == 0.75
    assert people["oscar"]["ttd_p50"] == 6.0
    assert figures["reject_reasons"][0] == {"reason": "looks like a loop", "count": 2, "preset": False}
    assert figures["reject_reasons"][1]["reason"] == "unknown site"


def test_it_buckets_times_to_decision(scraper):
    t = at("2026-11-10 09:00")
    for after in (5, 10, 11, 4000):
        make_request(scraper, t, metrics=DEEP, outcome=Status.APPROVED, source=Source.OPERATOR, by="olivia", after=after)
    buckets = {row["le"]: row["count"] for row in nov()["ttd_histogram"]}
    assert (buckets[10], buckets[30], buckets[None]) == (2, 1, 1)
    assert sum(buckets.values()) == 4


def test_it_counts_requests_per_day_by_source(scraper):
    make_request(scraper, at("2026-11-02 23:59"))
    make_request(scraper, at("2026-11-02 08:00"), metrics=DEEP, outcome=Status.APPROVED, source=Source.TIMEOUT, after=300)
    make_request(scraper, at("2026-11-03 00:00"), metrics=DEEP)
    days = {row["day"]: row for row in nov()["daily"]}
    assert (days["2026-11-02"]["policy"], days["2026-11-02"]["timeout"]) == (1, 1)
    assert days["2026-11-03"]["pending"] == 1


def brute_percentile(values: list[float], p: float) -> float:
    """percentile_cont, by hand: linear interpolation between the ranks around p*(n-1)."""
    values = sorted(values)
    pos = p * (len(values) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)


def test_percentiles_in_sql_match_a_brute_force_computation(scraper):
    # Runs on whichever database is configured: CI runs it on SQLite and PostgreSQL.
    rng = random.Random(7)
    t = at("2026-11-10 09:00")
    durations: dict[str, list[float]] = {"olivia": [], "oscar": []}
    for i in range(137):
        person = "olivia" if i % 3 else "oscar"
        after = round(rng.uniform(0.5, 280.0), 3)
        durations[person].append(after)
        make_request(scraper, t + timedelta(minutes=i), metrics=DEEP, outcome=Status.APPROVED,
                     source=Source.OPERATOR, by=person, after=after)
    from oversight.models import OversightRequest

    decided = OversightRequest.objects.filter(decision_source=Source.OPERATOR)
    overall = reports.duration_stats(decided)[None]
    everything = durations["olivia"] + durations["oscar"]
    for p, key in ((0.5, "p50"), (0.9, "p90"), (0.99, "p99")):
        assert overall[key] == pytest.approx(brute_percentile(everything, p), abs=1e-3)
    assert overall["max"] == pytest.approx(max(everything), abs=1e-3) and overall["n"] == 137
    per_person = reports.duration_stats(decided, "decided_by")
    for person, values in durations.items():
        assert per_person[person]["p90"] == pytest.approx(brute_percentile(values, 0.9), abs=1e-3)
        assert per_person[person]["n"] == len(values)


def test_a_single_decision_is_every_percentile(scraper):
    make_request(scraper, at("2026-11-10 09:00"), metrics=DEEP, outcome=Status.APPROVED,
                 source=Source.OPERATOR, by="olivia", after=42)
    h = nov()["headline"]
    assert h["ttd_p50"] == h["ttd_p90"] == h["ttd_p99"] == h["ttd_max"] == 42.0


def test_it_compares_each_headline_figure_with_the_month_before(scraper):
    make_request(scraper, at("2026-10-05 10:00"), metrics=DEEP)
    make_request(scraper, at("2026-10-05 10:00"))
    for _ in range(3):
        make_request(scraper, at("2026-11-05 10:00"))
    data = reports.review(NOV, now=at("2026-12-15 00:00"))
    assert data["changes"]["requests"] == {"previous": 2, "delta": 1}
    assert data["changes"]["critical_share"] == {"previous": 0.5, "delta": -0.5}
    assert data["changes"]["ttd_p50"] == {"previous": None, "delta": None}


def test_a_stored_snapshot_is_what_the_review_shows_until_asked_for_live_figures(scraper):
    make_request(scraper, at("2026-11-05 10:00"))
    reports.store_snapshot(NOV, now=at("2026-12-01 00:05"))
    make_request(scraper, at("2026-11-06 10:00"))  # a late data fix
    stored = reports.review(NOV)
    assert stored["headline"]["requests"] == 1 and stored["snapshot_at"] is not None
    live = reports.review(NOV, live=True)
    assert live["headline"]["requests"] == 2 and live["snapshot_at"] is None
    _, created = reports.store_snapshot(NOV)
    assert not created and MonthlyReview.objects.get().figures["headline"]["requests"] == 1


def test_it_lists_months_with_requests_or_snapshots_newest_first(scraper):
    make_request(scraper, at("2026-09-05 10:00"))
    MonthlyReview.objects.create(month="2026-07", figures={"headline": {}})
    months = [row["month"] for row in reports.months_with_data(now=at("2026-11-02 00:00"))]
    assert months == ["2026-11", "2026-09", "2026-07"]


@pytest.mark.parametrize("text", ["2026-13", "2026-1", "26-11", "", "2026-00", "abcd-ef", "2026-11-01"])
def test_it_refuses_what_is_not_a_month(text):
    with pytest.raises(reports.BadMonth, match="YYYY-MM"):
        reports.parse_month(text)


def test_month_arithmetic_crosses_years():
    assert reports.previous_month(date(2026, 1, 1)) == date(2025, 12, 1)
    assert reports.next_month(date(2026, 12, 1)) == date(2027, 1, 1)
    assert reports.month_bounds(date(2026, 12, 1))[1] == at("2027-01-01 00:00")


def alert(host, severity, started, resolved=None, process=""):
    from monitoring.models import Alert

    start = at(started)
    return Alert.objects.create(host=host, process=process, kind="pressure", severity=severity, value=91.0,
                                threshold=90.0, peak=95.0, started_at=start, raised_at=start + timedelta(seconds=30),
                                resolved_at=at(resolved) if resolved else None)


def test_it_counts_alerts_and_time_in_each_state_clipped_to_the_month():
    from monitoring.models import LeakFinding

    alert("host-a", "warning", "2026-10-31 23:00", "2026-11-01 01:00")  # raised in October, 1 h in November
    alert("host-a", "warning", "2026-11-10 09:50", "2026-11-10 10:40")
    alert("host-a", "critical", "2026-11-10 10:00", "2026-11-10 10:30")
    alert("host-b", "warning", "2026-11-30 23:00")  # still firing: counts up to the month's end
    alert("host-a", "warning", "2026-11-05 08:00", "2026-11-05 09:00", process="scraper (pid 3)")
    for host, detected, seen in (("host-a", "2026-11-03 10:00", "2026-11-03 12:00"),
                                 ("host-a", "2026-11-04 10:00", "2026-11-05 10:00"),
                                 ("host-b", "2026-10-20 10:00", "2026-11-02 10:00"),  # still rising in November
                                 ("host-c", "2026-10-20 10:00", "2026-10-30 10:00"),  # over before November
                                 ("host-a", "2026-12-02 10:00", "2026-12-02 10:00")):
        LeakFinding.objects.create(host=host, pid=3, process="scraper", slope_bytes_per_hour=2**20,
                                   detected_at=at(detected), last_seen_at=at(seen), confidence=0.99)
    memory = nov()["memory"]
    assert memory["alerts_measured"] and memory["leaks_measured"]
    assert memory["alerts"] == {"warning": 3, "critical": 1}
    hosts = {h["host"]: h for h in memory["hosts"]}
    assert (hosts["host-a"]["warning_seconds"], hosts["host-a"]["critical_seconds"]) == (6600.0, 1800.0)
    assert (hosts["host-b"]["warning_seconds"], hosts["host-b"]["critical_seconds"]) == (3600.0, 0.0)
    days = {d["day"]: d for d in memory["alerts_per_day"]}
    assert (days["2026-11-10"]["warning"], days["2026-11-10"]["critical"]) == (1, 1)
    assert memory["leak_suspects"] == 2
    assert {(leak["host"], leak["findings"]) for leak in memory["leaks"]} == {("host-a", 2), ("host-b", 1)}


def test_it_gives_the_false_positive_rate_of_alerts_and_findings_against_the_target():
    from monitoring.models import Alert, LeakFinding

    for i in range(10):
        alert("host-a", "warning", f"2026-11-{10 + i} 10:00", f"2026-11-{10 + i} 11:00")
    alert("host-a", "warning", "2026-10-10 10:00", "2026-10-10 11:00")  # October's
    first = Alert.objects.filter(started_at__gte=at("2026-11-01 00:00")).order_by("id").first()
    Alert.objects.filter(pk=first.pk).update(false_positive_at=at("2026-11-12 09:00"), false_positive_by="olga",
                                             false_positive_reason="backup")
    for day in range(3, 13):
        LeakFinding.objects.create(host="host-a", pid=day, process="p", slope_bytes_per_hour=2**20,
                                   detected_at=at(f"2026-11-{day:02d} 10:00"), last_seen_at=at(f"2026-11-{day:02d} 11:00"),
                                   confidence=0.9, dismissed_at=at("2026-11-20 10:00") if day < 4 else None)
    fp = nov()["memory"]["false_positives"]
    assert fp["alerts"] == {"raised": 10, "marked": 1, "rate": 0.1}
    assert fp["findings"] == {"raised": 10, "marked": 1, "rate": 0.1}
    assert (fp["raised"], fp["marked"], fp["rate"], fp["target"]) == (20, 2, 0.1, 0.05)
    rows = dict(map(tuple, next(t for t in reports.tables(nov()) if t["title"] == "Memory")["rows"]))
    assert rows["False-positive rate, alerts and findings (target ≤ 5.0%)"] == "10.0% — above target"
    assert rows["False positives: leak findings (marked ÷ raised)"] == "1 of 10 (10.0%)"
    assert ("false_positives", "all", "rate", 0.1) in list(reports.csv_rows(nov()))


def test_an_alert_still_firing_counts_up_to_now_in_the_current_month():
    alert("host-a", "critical", "2026-11-10 10:00")
    memory = reports.month_figures(NOV, now=at("2026-11-10 10:15"))["memory"]
    assert memory["hosts"][0]["critical_seconds"] == 900.0


def test_without_monitoring_models_memory_is_not_measured_never_zero(monkeypatch):
    monkeypatch.setattr(reports, "_model", lambda app_label, name: None)
    data = nov()
    assert data["memory"] == {"alerts_measured": False, "leaks_measured": False}
    memory_rows = next(t for t in reports.tables(data) if t["title"] == "Memory")["rows"]
    assert memory_rows == [["Memory alerts", "not measured"], ["Leak suspects", "not measured"]]


def test_it_tells_preset_reasons_from_free_text(scraper):
    from oversight.models import REJECT_PRESETS

    t = at("2026-11-10 09:00")
    make_request(scraper, t, metrics=DEEP, outcome=Status.REJECTED, source=Source.OPERATOR, by="olivia",
                 reason=REJECT_PRESETS[1], after=10)
    make_request(scraper, t, metrics=DEEP, outcome=Status.REJECTED, source=Source.OPERATOR, by="olivia",
                 reason="my own words", after=10)
    reasons = {r["reason"]: r["preset"] for r in nov()["reject_reasons"]}
    assert reasons == {REJECT_PRESETS[1].lower(): True, "my own words": False}



def test_standing_approvals_are_counted_apart(scraper):
    t = at("2026-11-10 09:00")
    make_request(scraper, t, metrics=HOT, outcome=Status.APPROVED, source=Source.STANDING, by="olivia", after=0)
    make_request(scraper, t)  # policy
    data = nov()
    assert (data["headline"]["standing_approved"], data["headline"]["policy_approved"]) == (1, 1)
    assert sum(day["standing"] for day in data["daily"]) == 1
    assert any(card["key"] == "standing_approved" and card["value"] == "1" for card in reports.cards(data))
