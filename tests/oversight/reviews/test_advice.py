"""Threshold what-ifs against a brute-force recomputation, and the suggestions."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from django.db import connection

from oversight.actions import do_change_policy
from oversight.models import OversightRequest, Source, Status
from oversight.policy import RULES
from oversight.reviews import advice
from tests.conftest import make_agent
from tests.oversight.reviews.helpers import at, make_request

pytestmark = pytest.mark.django_db

START, END = at("2026-11-01 00:00"), at("2026-12-01 00:00")


@pytest.fixture
def scraper(db):
    return make_agent("scraper-7").agent


def brute_needing_human(operation: str, rule: str, threshold: float) -> int:
    """Re-evaluate every request of the period by hand at `threshold` for `rule`."""
    count = 0
    for req in OversightRequest.objects.filter(created_at__gte=START, created_at__lt=END, operation=operation):
        if req.trusted_bypass:
            continue
        others = any(t["fired"] for t in req.triggers if t["rule"] != rule)
        value = next((t["value"] for t in req.triggers if t["rule"] == rule), None)
        count += others or (value is not None and value > threshold)
    return count


def test_what_ifs_match_a_brute_force_recomputation(scraper):
    rng = random.Random(11)
    trusted_agent = make_agent("trusted-1").agent
    for i in range(300):
        metrics = {}
        if rng.random() < 0.8:
            metrics["memory_pressure"] = round(rng.uniform(40, 100), 2)
        if rng.random() < 0.8:
            metrics["delegation_depth"] = rng.randint(0, 9)
        if rng.random() < 0.5:
            metrics["circular_refs"] = rng.randint(0, 7)
        make_request(
            trusted_agent if i % 17 == 0 else scraper, START + timedelta(minutes=i),
            operation=rng.choice(["web_scrape", "delegate"]), metrics=metrics, trusted=i % 17 == 0,
            always=i % 29 == 0,
        )
    make_request(scraper, END, operation="web_scrape", metrics={"delegation_depth": 9})  # next month: left out
    dists = advice.distributions(START, END)
    assert {(d.operation, d.rule) for d in dists} == {(op, r) for op in ("web_scrape", "delegate") for r in RULES}
    for dist in dists:
        thresholds = [0, 2, 4, 5, 8, 10] if dist.rule != "memory_pressure" else [40, 70, 80, 85.0, 99, 100]
        for t in thresholds:
            assert dist.needing_human(t) == brute_needing_human(dist.operation, dist.rule, t), (dist.rule, t)
        critical = OversightRequest.objects.filter(operation=dist.operation, critical=True, created_at__lt=END).count()
        assert dist.critical == critical


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the PostgreSQL passes need PostgreSQL")
def test_it_finds_the_portable_distributions_in_the_postgresql_passes(scraper):
    rng = random.Random(5)
    trusted_agent = make_agent("trusted-1").agent
    for i in range(400):
        metrics = {rule: value for rule, value in (
            ("memory_pressure", round(rng.uniform(40, 100), 2)), ("delegation_depth", rng.randint(0, 9)),
            ("circular_refs", rng.randint(0, 7))) if rng.random() < 0.7}
        fate = rng.random()
        outcome = {}
        if fate < 0.5:
            outcome = {"outcome": rng.choice([Status.APPROVED, Status.REJECTED]), "source": Source.OPERATOR}
        elif fate < 0.7:
            outcome = {"outcome": Status.APPROVED, "source": Source.TIMEOUT}
        make_request(trusted_agent if i % 13 == 0 else scraper, START + timedelta(minutes=i),
                     operation=rng.choice(["web_scrape", "delegate", "shell"]), metrics=metrics, trusted=i % 13 == 0,
                     always=i % 31 == 0, **outcome)
    passes = advice.distributions_pg(START, END)
    assert passes == advice.portable_distributions(START, END)
    assert sum(len(d.buckets) for d in passes) > 30 and any(d.others for d in passes)


def test_at_the_current_threshold_the_what_if_is_what_happened(scraper):
    for depth in (2, 5, 6, 7):
        make_request(scraper, START + timedelta(hours=depth), metrics={"delegation_depth": depth})
    result = advice.advice(START, END)
    row = next(r for r in result["what_ifs"] if r["rule"] == "delegation_depth")
    by_threshold = {w["threshold"]: w for w in row["what_ifs"]}
    assert row["current"] == 4.0 and by_threshold[4]["current"]
    assert by_threshold[4]["needing_human"] == 3 == OversightRequest.objects.filter(critical=True).count()
    assert (by_threshold[5]["change"], by_threshold[6]["change"], by_threshold[1]["change"]) == (-1, -2, 1)


def depth_reviews(agent, depth: int, approved: int, rejected: int, timeouts: int = 0, operation="web_scrape"):
    for i in range(approved + rejected + timeouts):
        outcome, source = (Status.APPROVED, Source.OPERATOR)
        if i >= approved:
            outcome = Status.REJECTED if i < approved + rejected else Status.APPROVED
            source = Source.OPERATOR if i < approved + rejected else Source.TIMEOUT
        make_request(agent, START + timedelta(minutes=i), operation=operation,
                     metrics={"delegation_depth": depth}, outcome=outcome, source=source, by="olivia",
                     reason="no" if outcome == Status.REJECTED else "")


def test_it_suggests_raising_a_threshold_operators_almost_always_approve(scraper):
    depth_reviews(scraper, 5, approved=97, rejected=3, timeouts=4)
    depth_reviews(scraper, 6, approved=5, rejected=5)
    make_request(scraper, START, operation="web_scrape", metrics={"delegation_depth": 5, "circular_refs": 9},
                 outcome=Status.APPROVED, source=Source.OPERATOR, by="olivia")
    (found,) = advice.advice(START, END)["suggestions"]
    assert (found["operation"], found["rule"], found["current"], found["threshold"]) == ("web_scrape", "delegation_depth", 4.0, 5.0)
    assert (found["approved"], found["rejected"], found["timeouts"], found["saved"]) == (97, 3, 4, 104)
    assert "approved 97% of web_scrape requests" in found["text"]
    assert "Raising delegation depth to 5 would have saved 104 reviews" in found["text"]
    assert "3 rejected ones" in found["text"]


def test_it_suggests_nothing_on_thin_or_mixed_evidence(scraper):
    depth_reviews(scraper, 5, approved=10, rejected=0)
    depth_reviews(scraper, 7, approved=30, rejected=10, operation="delegate")
    assert advice.advice(START, END)["suggestions"] == []


def test_it_judges_against_the_operations_own_current_policy(scraper):
    do_change_policy("web_scrape", {"delegation_depth": 6}, by="maria")
    depth_reviews(scraper, 5, approved=30, rejected=0)  # evaluated by the old threshold 4
    result = advice.advice(START, END)
    row = next(r for r in result["what_ifs"] if r["rule"] == "delegation_depth")
    assert row["current"] == 6.0 and row["policy"] == "web_scrape v1"
    assert result["suggestions"] == []  # already above every value seen


def test_a_rule_that_is_off_now_gets_no_what_ifs(scraper):
    do_change_policy("*", {"circular_refs": None}, by="maria")
    make_request(scraper, START, metrics={"circular_refs": 5})
    assert not [r for r in advice.advice(START, END)["what_ifs"] if r["rule"] == "circular_refs"]


def test_it_notes_operations_where_the_timeout_decided_too_often(scraper):
    depth_reviews(scraper, 5, approved=15, rejected=0, timeouts=6)
    (note,) = advice.advice(START, END)["notes"]
    assert (note["operation"], note["timeouts"], note["critical"]) == ("web_scrape", 6, 21)
    assert "6 of 21" in note["text"]


def test_memory_thresholds_count_fractional_values_exactly(scraper):
    for pressure in (80.0, 80.01, 84.99, 85.0, 85.5):
        make_request(scraper, START, metrics={"memory_pressure": pressure})
    (dist,) = [d for d in advice.distributions(START, END) if d.rule == "memory_pressure"]
    assert (dist.needing_human(80), dist.needing_human(85), dist.needing_human(84)) == (4, 1, 3)
