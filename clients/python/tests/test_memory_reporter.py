import gc
import time
import tracemalloc
from datetime import datetime

import pytest

from oversight_client import MemoryReporter


class Node:
    def __init__(self):
        self.other = None


def make_cycles(pairs):
    for _ in range(pairs):
        a, b = Node(), Node()
        a.other, b.other = b, a


def wait_for(condition, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail("condition not met in time")
        time.sleep(0.01)


@pytest.fixture
def impatient_client(make_client):
    """No retries: a failed push gives up at once."""
    return make_client(max_retries=0)


def test_it_takes_samples_in_the_shape_the_server_takes(client):
    sample = MemoryReporter(client, host="worker-1").sample().to_dict()

    assert set(sample) == {"at", "pid", "process", "rss_bytes", "vms_bytes", "gc",
                           "gc_counts", "cycles_found", "tracemalloc_top"}
    assert sample["at"].endswith("Z")
    assert datetime.fromisoformat(sample["at"]).utcoffset().total_seconds() == 0
    assert sample["rss_bytes"] > 0 and sample["vms_bytes"] >= sample["rss_bytes"]
    assert set(sample["gc"]) == {"collected", "uncollectable"}
    assert sample["tracemalloc_top"] == []
    assert isinstance(sample["pid"], int) and sample["process"]


def test_it_sends_the_per_generation_counts(client):
    sample = MemoryReporter(client).sample()

    counts = sample.to_dict()["gc_counts"]
    assert counts == list(sample.gc_counts)
    assert len(counts) == 3 and all(isinstance(n, int) and n >= 0 for n in counts)


def test_it_sends_samples_in_batches(client, fake):
    reporter = MemoryReporter(client, host="worker-1", max_batch=3)
    taken = [reporter.sample().to_dict()["at"] for _ in range(7)]

    assert reporter.flush() == 7

    assert [len(push["samples"]) for push in fake.pushes] == [3, 3, 1]
    assert {push["host"] for push in fake.pushes} == {"worker-1"}
    assert [s["at"] for push in fake.pushes for s in push["samples"]] == taken
    assert reporter.pending() == 0 and reporter.sent == 7


def test_it_defaults_the_host_to_the_clients(client, fake):
    reporter = MemoryReporter(client)
    reporter.sample()
    reporter.flush()

    assert fake.pushes[0]["host"] == client.host


def test_it_drops_the_oldest_samples_while_the_server_is_away(impatient_client, fake):
    fake.fail("POST", "/api/v1/metrics", status=503, times=1000)
    reporter = MemoryReporter(impatient_client, max_batch=2, max_buffer=5)
    taken = []
    for _ in range(8):
        taken.append(reporter.sample())
        assert reporter.flush() == 0

    assert reporter.dropped == 3 and reporter.pending() == 5

    fake.clear_faults()
    assert reporter.flush() == 5
    sent = [s["at"] for push in fake.pushes for s in push["samples"]]
    assert sent == [s.to_dict()["at"] for s in taken[3:]]


def test_it_drops_a_batch_the_server_refuses(impatient_client, fake):
    fake.fail("POST", "/api/v1/metrics", status=400)
    reporter = MemoryReporter(impatient_client, max_batch=2)
    for _ in range(3):
        reporter.sample()

    assert reporter.flush() == 1

    assert reporter.rejected == 2 and reporter.pending() == 0


def test_it_flushes_on_stop(client, fake):
    reporter = MemoryReporter(client, interval=3600).start()
    for _ in range(4):
        reporter.sample()

    reporter.stop()

    assert sum(len(push["samples"]) for push in fake.pushes) == 4 + 1  # and a last one
    assert reporter.pending() == 0


def test_it_reports_in_the_background(client, fake):
    with MemoryReporter(client, interval=0.05) as reporter:
        wait_for(lambda: len(fake.pushes) >= 2)

    assert reporter.sent >= 2
    assert all(len(push["samples"]) >= 1 for push in fake.pushes)


def test_it_sums_what_the_collector_freed_through_gc_callbacks(client, paused_gc):
    reporter = MemoryReporter(client, interval=3600).start()
    try:
        reporter.sample()
        make_cycles(5)
        gc.collect()
        sample = reporter.sample()
    finally:
        reporter.stop()

    assert sample.gc_collected >= 10
    assert reporter._on_gc not in gc.callbacks


def test_it_counts_cycles_found_by_its_scans(client, paused_gc):
    reporter = MemoryReporter(client, scan_cycles=True)
    reporter.sample()
    make_cycles(3)

    assert reporter.sample().cycles_found >= 6
    assert reporter.sample().cycles_found == 0


def test_it_reports_where_allocations_grew_when_tracemalloc_is_on(client):
    assert not tracemalloc.is_tracing()
    reporter = MemoryReporter(client, interval=3600, tracemalloc=True).start()
    try:
        hog = [bytearray(1024) for _ in range(2000)]
        top = reporter.sample().tracemalloc_top
    finally:
        reporter.stop()

    assert top, "expected at least one growth site"
    assert top[0]["where"].startswith(__file__)
    assert top[0]["size_bytes"] >= 2000 * 1024 and top[0]["count"] >= 2000
    assert not tracemalloc.is_tracing()  # it stops what it started
    del hog


def test_it_leaves_tracemalloc_off_by_default(client):
    with MemoryReporter(client, interval=3600) as reporter:
        assert not tracemalloc.is_tracing()
        assert reporter.sample().tracemalloc_top == []


def test_it_reads_process_memory_without_psutil(client, no_psutil):
    sample = MemoryReporter(client).sample()

    assert sample.rss_bytes > 0 and sample.vms_bytes > 0


@pytest.mark.asyncio
async def test_it_refuses_an_async_client(async_client):
    with pytest.raises(TypeError, match="blocking Client"):
        MemoryReporter(async_client)


def blocks(n, size):
    return [bytearray(size) for _ in range(n)]


def test_a_site_that_grew_into_fewer_blocks_counts_no_negative_blocks(client):
    # The server takes counts >= 0 only: one negative count would lose the whole batch.
    reporter = MemoryReporter(client, interval=3600, tracemalloc=True).start()
    try:
        kept = blocks(200, 16)
        reporter.sample()
        kept = blocks(2, 200_000)
        top = reporter.sample().tracemalloc_top
    finally:
        reporter.stop()
    del kept

    grown = [site for site in top if site["where"].startswith(__file__)]
    assert grown and grown[0]["size_bytes"] >= 2 * 200_000 - 200 * 16 - 200 * 100
    assert all(site["count"] >= 0 for site in top)
