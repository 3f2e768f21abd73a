import itertools
import time

import pytest

from oversight_client import OversightError, RateLimited, Unavailable, ValidationError

CALM = {"memory_pressure": 10, "delegation_depth": 0, "circular_refs": 0}
HOT = {"memory_pressure": 95}


def test_it_returns_the_same_request_when_the_first_answer_is_lost(client, fake):
    fake.fail("POST", "/api/v1/requests", cut=True)

    request = client.submit("file_write", "Write config", metrics=CALM)

    attempts = fake.calls_to("POST", "/api/v1/requests")
    assert [a.status for a in attempts] == [None, 200]  # cut, then "already have it"
    assert attempts[0].body["idempotency_key"] == attempts[1].body["idempotency_key"]
    assert list(fake.requests) == [request.id]


def test_it_keeps_the_callers_idempotency_key_across_retries(client, fake):
    fake.fail("POST", "/api/v1/requests", cut=True, times=2)

    client.submit("file_write", "Write config", idempotency_key="step-7", metrics=CALM)

    keys = [a.body["idempotency_key"] for a in fake.calls_to("POST", "/api/v1/requests")]
    assert keys == ["step-7"] * 3
    assert len(fake.requests) == 1


def test_it_makes_a_new_key_for_each_submit(client, fake):
    client.submit("scrape", "one", metrics=CALM)
    client.submit("scrape", "one", metrics=CALM)

    keys = {body["idempotency_key"] for body in fake.submitted()}
    assert len(keys) == 2 and len(fake.requests) == 2


def test_it_retries_reads_after_a_cut_connection(client, fake):
    request = client.submit("scrape", "x", metrics=CALM)
    fake.fail("GET", f"/api/v1/requests/{request.id}", cut=True)

    assert client.get(request.id).id == request.id


def test_it_cancels_once_when_the_first_answer_is_lost(client, fake):
    request = client.submit("delegate", "Delegate", metrics=HOT)
    fake.fail("POST", f"/api/v1/requests/{request.id}/cancel", cut=True)

    cancelled = client.cancel(request.id)

    assert cancelled.status == "cancelled"
    statuses = [c.status for c in fake.calls_to("POST", f"/api/v1/requests/{request.id}/cancel")]
    assert statuses == [None, 409]  # the retry found it already cancelled, which is success


def test_it_retries_a_503_until_the_server_is_back(client, fake):
    fake.fail("POST", "/api/v1/requests", status=503, times=2)

    request = client.submit("scrape", "x", metrics=CALM)

    assert request.approved
    assert [a.status for a in fake.calls_to("POST", "/api/v1/requests")] == [503, 503, 201]


def test_it_gives_up_after_max_retries_with_unavailable(make_client, fake):
    fake.fail("POST", "/api/v1/requests", status=503, times=100)

    with pytest.raises(Unavailable) as caught:
        make_client(max_retries=2).submit("scrape", "x")

    assert caught.value.status == 503 and caught.value.code == "unavailable"
    assert len(fake.calls_to("POST", "/api/v1/requests")) == 3


def test_it_backs_off_exponentially_with_jitter(make_client, fake):
    fake.fail("GET", "/api/v1/requests", status=503, times=3)

    list(make_client(backoff=0.1, max_backoff=10, max_retries=3).list())

    at = [call.at for call in fake.calls_to("GET", "/api/v1/requests")]
    gaps = [b - a for a, b in itertools.pairwise(at)]
    # Attempt n sleeps between half and all of backoff * 2**n.
    for n, gap in enumerate(gaps):
        cap = 0.1 * 2**n
        assert cap / 2 <= gap <= cap + 0.15, (n, gap)
    assert gaps[2] > gaps[0]


def test_it_caps_the_backoff(make_client, fake):
    fake.fail("GET", "/api/v1/requests", status=503, times=3)
    c = make_client(backoff=1, max_backoff=0.1, max_retries=3)

    started = time.monotonic()
    list(c.list())

    # Uncapped, the three sleeps would take at least 0.5 + 1 + 2 seconds.
    assert time.monotonic() - started < 0.6


def test_it_honours_retry_after_on_429(client, fake):
    fake.fail("POST", "/api/v1/requests", status=429, headers={"Retry-After": "1"})

    started = time.monotonic()
    request = client.submit("scrape", "x", metrics=CALM)

    assert request.approved
    assert time.monotonic() - started >= 1.0
    assert [a.status for a in fake.calls_to("POST", "/api/v1/requests")] == [429, 201]


def test_it_raises_rate_limited_at_once_when_retry_after_is_too_long(make_client, fake):
    fake.fail("POST", "/api/v1/requests", status=429, headers={"Retry-After": "60"})
    c = make_client(max_retry_after=5)

    started = time.monotonic()
    with pytest.raises(RateLimited) as caught:
        c.submit("scrape", "x")

    assert caught.value.retry_after == 60 and caught.value.status == 429
    assert time.monotonic() - started < 1
    assert len(fake.calls_to("POST", "/api/v1/requests")) == 1


def test_it_raises_rate_limited_when_the_retries_run_out(make_client, fake):
    fake.fail("POST", "/api/v1/requests", status=429, times=100)

    with pytest.raises(RateLimited):
        make_client(max_retries=1).submit("scrape", "x")

    assert len(fake.calls_to("POST", "/api/v1/requests")) == 2


def test_it_does_not_retry_what_cannot_succeed(client, fake):
    with pytest.raises(ValidationError):
        client.submit("BAD", "x")

    assert len(fake.calls_to("POST", "/api/v1/requests")) == 1


def test_it_reports_an_unreachable_server_as_unavailable(make_client, dead_url):
    c = make_client(dead_url, max_retries=2)

    started = time.monotonic()
    with pytest.raises(Unavailable) as caught:
        c.submit("scrape", "x")

    assert caught.value.code == "unreachable"
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("status", [400, 500])
def test_it_does_not_retry_a_400_or_a_500(client, fake, status):
    code = "validation_error" if status == 400 else "internal_error"
    body = {"error": {"code": code, "message": "no", "details": {}}}
    fake.fail("POST", "/api/v1/requests", status=status, body=body, times=5)

    with pytest.raises(OversightError) as raised:
        client.submit("scrape", "x", metrics=CALM)

    assert not isinstance(raised.value, Unavailable | RateLimited)
    assert [a.status for a in fake.calls_to("POST", "/api/v1/requests")] == [status]
