import gc
import logging

import pytest

from oversight_client import (
    Cancelled,
    PayloadChanged,
    Rejected,
    TimedOut,
    Unavailable,
    delegation,
    find_cycles,
    require_approval,
    set_default_client,
)

CALM = {"memory_pressure": 10, "delegation_depth": 0, "circular_refs": 0}
HOT = {"memory_pressure": 91}


class Node:
    def __init__(self):
        self.other = None


def make_cycles(pairs):
    for _ in range(pairs):
        a, b = Node(), Node()
        a.other, b.other = b, a


def test_it_lets_an_approved_operation_through(client, fake):
    ran = []

    with client.checkpoint("file_write", summary="Write notes", metrics=CALM) as request:
        ran.append(request)

    assert ran[0].approved and ran[0].decision.source == "policy"
    assert fake.submitted()[0]["summary"] == "Write notes"


def test_it_blocks_until_an_operator_approves(client, fake):
    fake.decide_next("delegate", "approved", after=0.2)

    with client.checkpoint("delegate", summary="Delegate", metrics=HOT, timeout=10) as request:
        assert request.approved and request.decision.by == "alice"


def test_it_raises_rejected_with_the_operators_reason(client, fake):
    fake.decide_next("delegate", "rejected", "too deep, try later")
    ran = []

    with (pytest.raises(Rejected) as caught,
          client.checkpoint("delegate", summary="Delegate", metrics=HOT, timeout=10)):
        ran.append(True)

    assert not ran
    assert caught.value.reason == "too deep, try later"
    assert caught.value.request.status == "rejected"


def test_it_raises_cancelled_when_the_request_is_cancelled_elsewhere(client, fake):
    fake.decide_next("delegate", "cancelled", source="agent")

    with (pytest.raises(Cancelled),
          client.checkpoint("delegate", summary="Delegate", metrics=HOT, timeout=10)):
        pytest.fail("a cancelled operation must not run")


def test_it_withdraws_the_request_when_its_own_timeout_passes(client, fake):
    with (pytest.raises(TimedOut) as caught,
          client.checkpoint("delegate", summary="Delegate", metrics=HOT, timeout=0.3)):
        pytest.fail("an undecided operation must not run")

    request_id = caught.value.request.id
    assert fake.requests[request_id]["status"] == "cancelled"


def test_it_goes_ahead_when_approval_lands_as_it_gives_up(client, fake):
    fake.decide_before_cancel = "approved"

    with client.checkpoint("delegate", summary="Delegate", metrics=HOT, timeout=0.3) as request:
        assert request.approved and request.reason == "just in time"


def test_it_raises_rejected_when_rejection_lands_as_it_gives_up(client, fake):
    fake.decide_before_cancel = "rejected"

    with (pytest.raises(Rejected),
          client.checkpoint("delegate", summary="Delegate", metrics=HOT, timeout=0.3)):
        pytest.fail("a rejected operation must not run")


def test_it_fails_closed_by_default_when_the_server_is_down(make_client, dead_url):
    ran = []
    c = make_client(dead_url, max_retries=1)

    with (pytest.raises(Unavailable),
          c.checkpoint("file_write", summary="Write", metrics=CALM)):
        ran.append(True)

    assert not ran


def test_it_fails_closed_on_a_503_that_outlasts_the_retries(client, fake):
    fake.fail("POST", "/api/v1/requests", status=503, times=100)

    with (pytest.raises(Unavailable),
          client.checkpoint("file_write", summary="Write", metrics=CALM)):
        pytest.fail("must not run without a decision")


def test_it_fails_open_with_a_loud_warning_when_asked(make_client, dead_url, caplog):
    ran = []
    c = make_client(dead_url, max_retries=0, on_unavailable="allow")

    with (caplog.at_level(logging.WARNING, logger="oversight_client"),
          c.checkpoint("file_write", summary="Write", metrics=CALM) as request):
        ran.append(request)

    assert ran == [None]
    [record] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "WITHOUT APPROVAL" in record.getMessage() and "file_write" in record.getMessage()


def test_it_lets_one_checkpoint_choose_differently_from_its_client(make_client, dead_url):
    c = make_client(dead_url, max_retries=0, on_unavailable="allow")

    with (pytest.raises(Unavailable),
          c.checkpoint("rm_rf", summary="Delete", metrics=CALM, on_unavailable="deny")):
        pytest.fail("must not run")


def test_it_asks_a_callable_whether_to_go_ahead(make_client, dead_url):
    seen = []

    def read_only_may_go(operation, exc):
        seen.append((operation, type(exc)))
        return operation == "read_file"

    c = make_client(dead_url, max_retries=0, on_unavailable=read_only_may_go)

    with c.checkpoint("read_file", summary="Read", metrics=CALM) as request:
        assert request is None
    with pytest.raises(Unavailable), c.checkpoint("file_write", summary="W", metrics=CALM):
        pytest.fail("must not run")

    assert seen == [("read_file", Unavailable), ("file_write", Unavailable)]


def test_it_refuses_an_unknown_on_unavailable_policy(client):
    with pytest.raises(ValueError, match="on_unavailable"):
        client.checkpoint("x", summary="x", on_unavailable="maybe")


def test_it_fills_automatic_metrics_without_overriding_the_callers(client, fake):
    pytest.importorskip("psutil")
    fake.thresholds["memory_pressure"] = 100  # whatever this machine's pressure is
    fake.thresholds["circular_refs"] = 1000
    with delegation(client=client), delegation(client=client), \
         client.checkpoint("scrape", summary="Scrape", metrics={"circular_refs": 0}):
        pass

    metrics = fake.submitted()[0]["metrics"]
    assert 0 <= metrics["memory_pressure"] <= 100
    assert metrics["delegation_depth"] == 2
    assert metrics["circular_refs"] == 0
    assert metrics["host"] == client.host


def test_it_keeps_a_metric_the_caller_set_to_none(client, fake):
    fake.thresholds["circular_refs"] = 1000
    with client.checkpoint("scrape", summary="S", metrics={"memory_pressure": None}, timeout=5):
        pass

    assert fake.submitted()[0]["metrics"]["memory_pressure"] is None


def test_it_takes_circular_refs_from_the_last_cycle_scan(client, fake, paused_gc):
    fake.thresholds["circular_refs"] = 1000
    make_cycles(2)
    report = find_cycles()

    with client.checkpoint("scrape", summary="S", metrics={"memory_pressure": 1}):
        pass

    assert report.total >= 4
    assert fake.submitted()[0]["metrics"]["circular_refs"] == report.total


def test_it_scans_for_cycles_only_when_asked(client, fake, paused_gc):
    fake.thresholds["circular_refs"] = 1000
    find_cycles()
    make_cycles(2)  # garbage nobody has looked for yet

    with client.checkpoint("scrape", summary="S", metrics={"memory_pressure": 1}):
        pass
    assert len(gc.garbage) == 0
    with client.checkpoint("scrape", summary="S", metrics={"memory_pressure": 1},
                           scan_cycles=True):
        pass

    first, second = (body["metrics"]["circular_refs"] for body in fake.submitted())
    assert first == 0 and second >= 4


def test_it_sends_only_the_callers_metrics_without_auto_metrics(client, fake):
    with client.checkpoint("scrape", summary="S", metrics=CALM, auto_metrics=False):
        pass

    assert fake.submitted()[0]["metrics"] == CALM


def test_it_does_without_psutil(client, fake, no_psutil):
    fake.thresholds["circular_refs"] = 1000  # an earlier scan's count may be anything
    with client.checkpoint("scrape", summary="S", timeout=5):
        pass

    metrics = fake.submitted()[0]["metrics"]
    assert "memory_pressure" not in metrics
    assert metrics["delegation_depth"] == 0 and metrics["host"] == client.host


def test_it_gates_a_decorated_function(client, fake):
    @client.require_approval("file_write", summary=lambda path, text: f"Write {len(text)} "
                             f"chars to {path}", payload=lambda path, text: {"path": path},
                             metrics=CALM)
    def write(path, text):
        return f"wrote {path}"

    assert write("/tmp/notes.txt", "hello") == "wrote /tmp/notes.txt"
    body = fake.submitted()[0]
    assert body["operation"] == "file_write"
    assert body["summary"] == "Write 5 chars to /tmp/notes.txt"
    assert body["payload"] == {"path": "/tmp/notes.txt"}
    assert write.__name__ == "write"


def test_it_never_calls_a_rejected_function(client, fake):
    fake.auto_decide["file_write"] = ("rejected", "not on a Friday")
    calls = []

    @require_approval("file_write", client=client, metrics=HOT)
    def write(path):
        calls.append(path)

    with pytest.raises(Rejected, match="not on a Friday"):
        write("/etc/hosts")
    assert calls == []
    assert fake.submitted()[0]["summary"].startswith("call ")


def test_it_uses_the_default_client_when_none_is_given(fake, monkeypatch, reset_default_client):
    monkeypatch.setenv("OVERSIGHT_URL", fake.url)
    monkeypatch.setenv("OVERSIGHT_API_KEY", fake.api_key)

    @require_approval("scrape", summary="Scrape", metrics=CALM)
    def scrape():
        return "ok"

    assert scrape() == "ok"
    assert len(fake.requests) == 1
    set_default_client(None)


EDITED = {"url": "https://example.org", "depth": 2}


def test_it_hands_over_the_payload_an_operator_approved_with_changes(client, fake):
    fake.decide_next("delegate", "approved", payload=EDITED, note="depth 2 is plenty")

    asked = {"url": "https://example.org", "depth": 6}
    with client.checkpoint("delegate", summary="Delegate", payload=asked,
                           metrics=HOT, timeout=10) as approval:
        ran = approval.payload

    assert ran == EDITED and approval.changed and approval.note == "depth 2 is plenty"
    assert approval.submitted_payload == {"url": "https://example.org", "depth": 6}


def test_an_unchanged_approval_hands_over_the_payload_as_submitted(client, fake):
    fake.decide_next("delegate", "approved")

    with client.checkpoint("delegate", summary="Delegate", payload={"depth": 6},
                           metrics=HOT, timeout=10) as approval:
        assert approval.payload == {"depth": 6} and not approval.changed and approval.note == ""


def test_a_rejection_carries_the_operators_note(client, fake):
    fake.decide_next("delegate", "rejected", "too deep", note="retry with depth 2")

    with (pytest.raises(Rejected) as caught,
          client.checkpoint("delegate", summary="Delegate", metrics=HOT, timeout=10)):
        pass

    assert caught.value.reason == "too deep" and caught.value.note == "retry with depth 2"


def test_a_decorated_function_gets_the_approval_when_it_takes_one(client, fake):
    fake.decide_next("delegate", "approved", payload=EDITED)

    @require_approval("delegate", "Delegate", client=client, metrics=HOT, timeout=10,
                      payload=lambda url, depth, approval=None: {"url": url, "depth": depth})
    def scrape(url, depth, approval=None):
        return approval.payload

    assert scrape("https://example.org", 6) == EDITED


def test_a_decorated_function_that_cannot_take_the_changes_is_not_run(client, fake):
    fake.decide_next("delegate", "approved", payload=EDITED)
    ran = []

    @require_approval("delegate", "Delegate", client=client, metrics=HOT, timeout=10)
    def scrape(url, depth):
        ran.append((url, depth))

    with pytest.raises(PayloadChanged):
        scrape("https://example.org", 6)
    assert ran == []


def test_a_decorated_function_without_the_parameter_runs_when_nothing_changed(client, fake):
    fake.decide_next("delegate", "approved")

    @require_approval("delegate", "Delegate", client=client, metrics=HOT, timeout=10)
    def scrape(url, depth):
        return (url, depth)

    assert scrape("https://example.org", 6) == ("https://example.org", 6)
