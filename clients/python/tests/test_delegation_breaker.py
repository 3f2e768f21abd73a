import asyncio
import contextvars
import threading

import pytest

from oversight_client import (
    DelegationLimitExceeded,
    Rejected,
    current_depth,
    delegation,
)

CALM = {"memory_pressure": 10, "circular_refs": 0}


def test_it_tracks_depth_through_nested_delegations():
    seen = [current_depth()]

    with delegation() as one:
        seen.append(current_depth())
        with delegation() as two:
            seen.append(current_depth())
        seen.append(current_depth())

    seen.append(current_depth())
    assert seen == [0, 1, 2, 1, 0]
    assert (one, two) == (1, 2)


def test_it_restores_the_depth_when_the_block_raises():
    with pytest.raises(KeyError), delegation(), delegation():
        raise KeyError("boom")

    assert current_depth() == 0


def test_it_keeps_a_separate_depth_per_thread():
    both_inside = threading.Barrier(2)
    seen = {}

    def deep():
        with delegation(), delegation(), delegation():
            both_inside.wait(timeout=5)
            seen["deep"] = current_depth()
            both_inside.wait(timeout=5)

    def shallow():
        with delegation():
            both_inside.wait(timeout=5)
            seen["shallow"] = current_depth()
            both_inside.wait(timeout=5)

    threads = [threading.Thread(target=deep), threading.Thread(target=shallow)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=5)

    assert seen == {"deep": 3, "shallow": 1}
    assert current_depth() == 0


def test_it_starts_new_threads_at_zero_unless_the_context_is_carried():
    seen = {}

    with delegation(), delegation():
        plain = threading.Thread(target=lambda: seen.setdefault("plain", current_depth()))
        context = contextvars.copy_context()
        carried = threading.Thread(
            target=lambda: context.run(lambda: seen.setdefault("carried", current_depth())))
        for thread in (plain, carried):
            thread.start()
            thread.join(timeout=5)

    assert seen == {"plain": 0, "carried": 2}


@pytest.mark.asyncio
async def test_it_keeps_a_separate_depth_per_asyncio_task():
    seen = {}

    async def nest(name, levels):
        if levels == 0:
            seen[f"{name} deepest"] = current_depth()
            return
        async with delegation():
            await asyncio.sleep(0.01)  # let the other task run while this one is deep
            await nest(name, levels - 1)

    async def sub_agent(name, levels):
        seen[f"{name} start"] = current_depth()
        await nest(name, levels)

    async with delegation():
        await asyncio.gather(sub_agent("a", 3), sub_agent("b", 1))
        seen["parent"] = current_depth()

    assert seen == {"a start": 1, "b start": 1, "a deepest": 4, "b deepest": 2, "parent": 1}
    assert current_depth() == 0


def test_it_refuses_to_go_past_the_hard_limit():
    with delegation(hard_limit=2), delegation(hard_limit=2):
        with pytest.raises(DelegationLimitExceeded) as caught, delegation(hard_limit=2):
            pytest.fail("must not enter")
        assert current_depth() == 2

    assert caught.value.depth == 3 and caught.value.limit == 2


def test_it_asks_for_oversight_past_the_soft_limit(client, fake):
    with delegation(1, 3, client=client, metrics=CALM):
        assert fake.submitted() == []
        with delegation(1, 3, client=client, metrics=CALM) as depth:
            assert depth == 2

    [body] = fake.submitted()
    assert body["operation"] == "delegate"
    assert body["metrics"]["delegation_depth"] == 2
    assert "depth 2" in body["summary"]


def test_it_uses_the_policy_thresholds_at_the_default_limits(client, fake):
    # Default soft limit 4 matches the default policy: depth 5 is critical.
    fake.decide_next("delegate", "approved")
    depths = []

    def go(n):
        with delegation(client=client, metrics=CALM, timeout=5) as depth:
            depths.append(depth)
            if n > 1:
                go(n - 1)

    go(5)

    assert depths == [1, 2, 3, 4, 5]
    [request] = fake.requests.values()
    assert request["critical"] and request["decision"]["by"] == "alice"


def test_it_does_not_enter_a_deeper_delegation_that_is_rejected(client, fake):
    fake.auto_decide["delegate"] = ("rejected", "deep enough")
    fake.thresholds["delegation_depth"] = 1

    with delegation(1, 5, client=client, metrics=CALM):
        with pytest.raises(Rejected, match="deep enough"), \
             delegation(1, 5, client=client, metrics=CALM):
            pytest.fail("must not enter")
        assert current_depth() == 1


def test_it_limits_a_recursive_function_as_a_decorator():
    depths = []

    @delegation(soft_limit=3, hard_limit=3)
    def recurse():
        depths.append(current_depth())
        recurse()

    with pytest.raises(DelegationLimitExceeded):
        recurse()

    assert depths == [1, 2, 3]
    assert current_depth() == 0


@pytest.mark.asyncio
async def test_it_limits_a_coroutine_function_as_a_decorator():
    depths = []

    @delegation(soft_limit=2, hard_limit=2)
    async def recurse():
        depths.append(current_depth())
        await recurse()

    with pytest.raises(DelegationLimitExceeded):
        await recurse()

    assert depths == [1, 2]


def test_it_refuses_negative_limits():
    with pytest.raises(ValueError, match="negative"):
        delegation(soft_limit=-1)
