import asyncio

import pytest

from oversight_client import Rejected, Unavailable, require_approval

CALM = {"memory_pressure": 10, "delegation_depth": 0, "circular_refs": 0}
HOT = {"memory_pressure": 91}


@pytest.mark.asyncio
async def test_it_submits_and_waits_for_a_decision(async_client, fake):
    request = await async_client.submit("delegate", "Delegate", metrics=HOT)
    fake.decide_next("delegate", "approved", after=0.2)

    final = await async_client.wait(request.id, timeout=5)

    assert final.approved and final.decision.by == "alice"
    assert (await async_client.get(request.id)).approved


@pytest.mark.asyncio
async def test_it_returns_the_same_request_when_the_first_answer_is_lost(async_client, fake):
    fake.fail("POST", "/api/v1/requests", cut=True)

    request = await async_client.submit("scrape", "Scrape", metrics=CALM)

    attempts = fake.calls_to("POST", "/api/v1/requests")
    assert [a.status for a in attempts] == [None, 200]
    assert list(fake.requests) == [request.id]


@pytest.mark.asyncio
async def test_it_lists_every_page(async_client):
    for n in range(5):
        await async_client.submit("scrape", f"page {n}", metrics=CALM)

    listed = [r async for r in async_client.list(limit=2)]

    assert [r.summary for r in listed] == [f"page {n}" for n in reversed(range(5))]


@pytest.mark.asyncio
async def test_it_cancels(async_client):
    request = await async_client.submit("delegate", "Delegate", metrics=HOT)

    assert (await async_client.cancel(request.id)).status == "cancelled"


@pytest.mark.asyncio
async def test_it_gates_an_async_block(async_client, fake):
    fake.decide_next("delegate", "rejected", "no")

    with pytest.raises(Rejected, match="no"):
        async with async_client.checkpoint("delegate", summary="D", metrics=HOT, timeout=5):
            pytest.fail("must not run")


@pytest.mark.asyncio
async def test_it_gates_a_coroutine_function(async_client, fake):
    @async_client.require_approval("scrape", summary=lambda url: f"Scrape {url}", metrics=CALM)
    async def scrape(url):
        await asyncio.sleep(0)
        return url.upper()

    assert await scrape("a.example") == "A.EXAMPLE"
    assert fake.submitted()[0]["summary"] == "Scrape a.example"


@pytest.mark.asyncio
async def test_it_keeps_the_event_loop_running_while_waiting(async_client, fake):
    ticks = 0

    async def tick():
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    ticker = asyncio.create_task(tick())
    fake.decide_next("delegate", "approved", after=0.3)
    async with async_client.checkpoint("delegate", summary="D", metrics=HOT, timeout=5):
        pass
    ticker.cancel()

    assert ticks >= 10


@pytest.mark.asyncio
async def test_it_waits_for_a_blocking_client_off_the_event_loop(client, fake):
    ticks = 0

    async def tick():
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    @require_approval("delegate", client=client, metrics=HOT, timeout=5)
    async def delegate():
        return "done"

    ticker = asyncio.create_task(tick())
    fake.decide_next("delegate", "approved", after=0.3)
    assert await delegate() == "done"
    ticker.cancel()

    assert ticks >= 10


@pytest.mark.asyncio
async def test_it_fails_closed_when_the_server_is_down(make_async_client, dead_url):
    c = make_async_client(dead_url, max_retries=1)

    with pytest.raises(Unavailable):
        async with c.checkpoint("file_write", summary="W", metrics=CALM):
            pytest.fail("must not run")


@pytest.mark.asyncio
async def test_it_refuses_a_plain_with_on_an_async_client(async_client):
    with pytest.raises(TypeError, match="async with"), async_client.checkpoint("x", summary="x"):
        pytest.fail("must not run")
