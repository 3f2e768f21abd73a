"""A background thread that reports this process's memory to Oversight (spec §6)."""

from __future__ import annotations

import gc
import inspect
import logging
import os
import sys
import threading
import tracemalloc as _tracemalloc
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .auto_metrics import process_memory, psutil_module
from .cycles import cycles_found_total, find_cycles
from .errors import OversightError, PayloadTooLarge, ValidationError

log = logging.getLogger("oversight_client")

# Allocation sites that are the measuring itself, not the program being measured.
_TRACE_FILTERS = [
    _tracemalloc.Filter(False, _tracemalloc.__file__),
    _tracemalloc.Filter(False, __file__),
    _tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
    _tracemalloc.Filter(False, "<frozen importlib._bootstrap_external>"),
    _tracemalloc.Filter(False, "<unknown>"),
]


def iso_utc(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Sample:
    at: datetime
    pid: int
    process: str
    rss_bytes: int | None
    vms_bytes: int | None
    gc_collected: int  # objects the collector freed since the previous sample
    gc_uncollectable: int
    gc_counts: tuple[int, ...]  # allocations pending per generation (gc.get_count())
    cycles_found: int  # objects find_cycles() found since the previous sample
    tracemalloc_top: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The sample as POST /api/v1/metrics takes it."""
        return {
            "at": iso_utc(self.at),
            "pid": self.pid,
            "process": self.process,
            "rss_bytes": self.rss_bytes,
            "vms_bytes": self.vms_bytes,
            "gc": {"collected": self.gc_collected, "uncollectable": self.gc_uncollectable},
            "gc_counts": list(self.gc_counts),
            "cycles_found": self.cycles_found,
            "tracemalloc_top": self.tracemalloc_top,
        }


def _process_name() -> str:
    psutil = psutil_module()
    if psutil is not None:
        try:
            return str(psutil.Process().name())
        except Exception:
            log.debug("Process().name() failed", exc_info=True)
    return os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python"


class MemoryReporter:
    """Samples the process every ``interval`` seconds and pushes batches to the server.

    Each sample: RSS and VMS (psutil, else /proc), what the garbage collector freed and
    could not free since the previous sample (summed through ``gc.callbacks``, so no
    collection is forced), objects found in cycles by ``find_cycles`` (run on each sample
    only with ``scan_cycles=True``: a full collection), and with ``tracemalloc=True``
    the source lines whose allocations grew most.

    tracemalloc is off by default: while tracing, every allocation records its traceback,
    which slows allocation-heavy code noticeably and costs memory for each live block.
    Turn it on while hunting a leak, not as a habit.

    Samples wait in a buffer of ``max_buffer`` and go out ``max_batch`` at a time. While
    the server is away the buffer fills; past ``max_buffer`` the oldest samples are
    dropped and counted in ``dropped``. ``stop()`` takes a last sample and sends what is
    left.
    """

    def __init__(
        self,
        client: Any,
        host: str | None = None,
        interval: float = 10.0,
        tracemalloc: bool = False,
        max_batch: int = 50,
        max_buffer: int = 1000,
        *,
        scan_cycles: bool = False,
        tracemalloc_top: int = 10,
    ) -> None:
        if max_batch < 1 or max_buffer < 1:
            raise ValueError("max_batch and max_buffer must be at least 1")
        if inspect.iscoroutinefunction(getattr(client, "push_metrics", None)):
            # The reporter is a thread; it has no event loop to await with.
            raise TypeError("MemoryReporter needs a blocking Client, not an AsyncClient")
        self.client = client
        self.host = host or client.host
        self.interval = interval
        self.tracemalloc = tracemalloc
        self.max_batch = max_batch
        self.max_buffer = max_buffer
        self.scan_cycles = scan_cycles
        self.tracemalloc_top = tracemalloc_top
        self.dropped = 0  # samples lost to a full buffer
        self.rejected = 0  # samples the server refused (400/413); never retried
        self.sent = 0
        self.last_sample: Sample | None = None
        self._buffer: deque[Sample] = deque()
        self._lock = threading.Lock()  # guards the buffer and the counters
        self._sampling = threading.Lock()  # one sample at a time keeps the deltas right
        self._flushing = threading.Lock()  # one flush at a time keeps batches in order
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._away = False
        self._pid = os.getpid()
        self._process = _process_name()
        # Running totals written only by the gc callback. Samples take differences, so
        # the callback (which may run in any thread, mid-allocation) never takes a lock.
        self._collected = 0
        self._uncollectable = 0
        self._reported = (0, 0, cycles_found_total())
        self._traced_by_us = False
        self._snapshot: _tracemalloc.Snapshot | None = None

    # gc bookkeeping

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "stop":
            self._collected += info.get("collected", 0)
            self._uncollectable += info.get("uncollectable", 0)

    def _top_growth(self) -> list[dict[str, Any]]:
        if not self.tracemalloc or not _tracemalloc.is_tracing():
            return []
        snapshot = _tracemalloc.take_snapshot().filter_traces(_TRACE_FILTERS)
        previous, self._snapshot = self._snapshot, snapshot
        if previous is None:
            return []
        top = []
        for stat in snapshot.compare_to(previous, "lineno"):
            if stat.size_diff <= 0:
                continue
            frame = stat.traceback[0]
            # A line can grow in bytes while holding fewer blocks (a few large ones
            # replaced many small ones); the server takes no negative count.
            top.append({"where": f"{frame.filename}:{frame.lineno}",
                        "size_bytes": stat.size_diff, "count": max(0, stat.count_diff)})
            if len(top) >= self.tracemalloc_top:
                break
        return top

    # sampling and sending

    def sample(self) -> Sample:
        """Take one sample now and buffer it."""
        with self._sampling:
            if self.scan_cycles:
                find_cycles()
            rss, vms = process_memory()
            now = (self._collected, self._uncollectable, cycles_found_total())
            before, self._reported = self._reported, now
            collected, uncollectable, cycles = (a - b for a, b in zip(now, before, strict=True))
            sample = Sample(
                at=datetime.now(UTC),
                pid=self._pid,
                process=self._process,
                rss_bytes=rss,
                vms_bytes=vms,
                gc_collected=collected,
                gc_uncollectable=uncollectable,
                gc_counts=gc.get_count(),
                cycles_found=cycles,
                tracemalloc_top=self._top_growth(),
            )
        with self._lock:
            self._buffer.append(sample)
            self._trim()
            self.last_sample = sample
        return sample

    def _trim(self) -> None:
        while len(self._buffer) > self.max_buffer:
            self._buffer.popleft()
            self.dropped += 1

    def pending(self) -> int:
        with self._lock:
            return len(self._buffer)

    def flush(self) -> int:
        """Send everything buffered; returns how many samples went out.

        Stops at the first batch the server can't take now; those samples stay buffered.
        """
        sent = 0
        with self._flushing:
            while True:
                with self._lock:
                    batch = [self._buffer.popleft()
                             for _ in range(min(self.max_batch, len(self._buffer)))]
                if not batch:
                    break
                try:
                    self.client.push_metrics(self.host, [s.to_dict() for s in batch])
                except (ValidationError, PayloadTooLarge) as exc:
                    # Sending the same batch again would fail the same way.
                    log.warning("server refused %d memory samples: %s", len(batch), exc)
                    with self._lock:
                        self.rejected += len(batch)
                    continue
                except OversightError as exc:
                    with self._lock:
                        self._buffer.extendleft(reversed(batch))
                        self._trim()
                    if not self._away:
                        log.warning("memory samples kept for later, the server is away: %s", exc)
                        self._away = True
                    break
                if self._away:
                    log.info("memory samples flowing again")
                    self._away = False
                sent += len(batch)
                with self._lock:
                    self.sent += len(batch)
        return sent

    # lifecycle

    def start(self) -> MemoryReporter:
        if self._thread is not None:
            raise RuntimeError("this reporter was already started")
        gc.callbacks.append(self._on_gc)
        if self.tracemalloc:
            if not _tracemalloc.is_tracing():
                _tracemalloc.start()
                self._traced_by_us = True
            self._snapshot = _tracemalloc.take_snapshot().filter_traces(_TRACE_FILTERS)
        self._thread = threading.Thread(target=self._loop, name="oversight-memory-reporter",
                                        daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stopping.wait(self.interval):
            try:
                self.sample()
                self.flush()
            except Exception:  # the reporter must never take the agent down
                log.exception("memory reporter iteration failed")

    def stop(self, timeout: float | None = None) -> None:
        """Stop sampling, take a last sample and send what is buffered (best effort).

        The last sample means even a process shorter than one interval reports itself.
        """
        if self._stopping.is_set():
            return
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
            try:
                self.sample()
            except Exception:
                log.exception("last memory sample failed")
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        if self._traced_by_us:
            _tracemalloc.stop()
            self._traced_by_us = False
        self._snapshot = None
        self.flush()

    def __enter__(self) -> MemoryReporter:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
