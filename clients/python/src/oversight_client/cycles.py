"""Finding objects that only reference cycles keep alive, and proving a block leaks nothing.

Agents build contexts that point at their parents, children and tools; when such a
structure is dropped it is freed only by the cyclic garbage collector, late and in one
expensive pass. These tools make that visible: ``find_cycles`` counts what the collector
would free, ``leak_check`` fails when a block leaves objects behind for good, and
``ContextRegistry`` tracks contexts without itself keeping them alive.
"""

from __future__ import annotations

import gc
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

_lock = threading.RLock()
_last_report: CycleReport | None = None
_found_total = 0  # objects found by every find_cycles() so far; the reporter takes deltas


@dataclass(frozen=True)
class CycleReport:
    total: int  # objects that only reference cycles were keeping alive
    by_type: dict[str, int]
    at: float = field(default_factory=time.time, compare=False)

    def top(self, n: int = 10) -> list[tuple[str, int]]:
        return Counter(self.by_type).most_common(n)


def type_name(obj: object) -> str:
    cls = type(obj)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def find_cycles(group_by: Callable[[object], str] | None = None) -> CycleReport:
    """Run a full collection and report what it found, grouped by type.

    The collection runs with ``gc.DEBUG_SAVEALL`` so the garbage is kept for counting
    instead of freed; what it added to ``gc.garbage`` is removed again, the previous
    debug flags are restored (also when counting fails), and a second collection frees
    the objects. Two full collections: run it when asked or on a slow timer, never on
    every operation.
    """
    global _last_report, _found_total
    key = group_by or type_name
    with _lock:  # two overlapping scans would count each other's slice of gc.garbage
        flags = gc.get_debug()
        # If the caller already asked to keep all garbage, what we find stays theirs.
        theirs = bool(flags & gc.DEBUG_SAVEALL)
        start = len(gc.garbage)
        found: list[Any] = []
        try:
            gc.set_debug(flags | gc.DEBUG_SAVEALL)
            gc.collect()
            found = gc.garbage[start:]
            by_type = Counter(key(obj) for obj in found)
            total = len(found)
        finally:
            found = []  # a traceback must not keep the garbage alive
            if not theirs:
                del gc.garbage[start:]
            gc.set_debug(flags)
        if not theirs and total:
            gc.collect()
        report = CycleReport(total=total, by_type=dict(by_type))
        _last_report = report
        _found_total += total
        return report


def last_cycle_report() -> CycleReport | None:
    """The report of the latest ``find_cycles()`` in this process, if any ran."""
    return _last_report


def cycles_found_total() -> int:
    return _found_total


class LeakDetected(AssertionError):
    """Objects created inside a ``leak_check`` block survived a full collection."""

    def __init__(self, report: LeakReport) -> None:
        super().__init__(report.describe())
        self.report = report


@dataclass
class LeakReport:
    created: int = 0  # objects of the tracked types alive when the block ended
    surviving: int = 0  # of those, still alive after a full collection
    by_type: dict[str, int] = field(default_factory=dict)  # survivors by type

    def describe(self) -> str:
        kinds = ", ".join(f"{name}={n}" for name, n in sorted(self.by_type.items()))
        text = f"{self.surviving} of {self.created} objects surviving GC"
        return f"{text}: {kinds}" if kinds else text


def _refs(types: tuple[type, ...]) -> dict[int, weakref.ref[Any] | None]:
    """id -> weak reference (None for objects that can't have one) of live instances."""
    refs: dict[int, weakref.ref[Any] | None] = {}
    for obj in gc.get_objects():
        if isinstance(obj, types):
            try:
                refs[id(obj)] = weakref.ref(obj)
            except TypeError:
                refs[id(obj)] = None
    return refs


def _same(ref: weakref.ref[Any] | None, obj: object) -> bool:
    # An id can be reused by a new object once the old one is freed; the weak reference
    # tells them apart. Without one, the id is all there is.
    return ref is None or ref() is obj


@contextmanager
def leak_check(*types: type) -> Iterator[LeakReport]:
    """Raise ``LeakDetected`` if instances of ``types`` made in the block outlive it.

    Counts the instances that appeared during the block and are still alive at its end,
    runs a full collection (so objects held only by cycles go), and reports the rest:
    "N of M objects surviving GC". The types must be ones the collector tracks (classes
    defined in Python are). If the block raises, its exception propagates unchecked.
    """
    if not types:
        raise TypeError("leak_check needs at least one type")
    report = LeakReport()
    before = _refs(types)
    yield report
    created: dict[int, weakref.ref[Any] | None] = {}
    for obj in gc.get_objects():
        if isinstance(obj, types):
            known = id(obj) in before and _same(before[id(obj)], obj)
            if not known:
                try:
                    created[id(obj)] = weakref.ref(obj)
                except TypeError:
                    created[id(obj)] = None
    obj = None  # drop the loop's last strong reference before collecting
    report.created = len(created)
    gc.collect()
    survivors: Counter[str] = Counter()
    weakless = {key for key, ref in created.items() if ref is None}
    for ref in created.values():
        alive = ref() if ref is not None else None
        if alive is not None:
            survivors[type_name(alive)] += 1
        alive = None
    if weakless:
        for candidate in gc.get_objects():
            if isinstance(candidate, types) and id(candidate) in weakless:
                survivors[type_name(candidate)] += 1
        candidate = None
    report.surviving = sum(survivors.values())
    report.by_type = dict(survivors)
    if report.surviving:
        raise LeakDetected(report)


class ContextRegistry:
    """Agent contexts, held by weak reference, closed explicitly.

    The registry never keeps a context alive: a context nobody uses any more disappears
    from it (and is counted in ``collected_unclosed`` if it was never closed, a hint that
    something relied on the garbage collector). ``close_context`` and ``close`` call each
    context's own ``close()`` (if it has one), which is where contexts should break the
    references they hold to parents, children and tools.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._refs: dict[int, weakref.ref[Any]] = {}
        self.collected_unclosed = 0

    def register(self, context: Any) -> Any:
        key = id(context)

        def forget(_ref: weakref.ref[Any], key: int = key) -> None:
            with self._lock:
                if self._refs.get(key) is _ref:
                    del self._refs[key]
                    self.collected_unclosed += 1

        with self._lock:
            self._refs[key] = weakref.ref(context, forget)
        return context

    def close_context(self, context: Any) -> bool:
        """Close one context and forget it; False if it wasn't registered."""
        with self._lock:
            ref = self._refs.get(id(context))
            if ref is None or ref() is not context:
                return False
            del self._refs[id(context)]
        closer = getattr(context, "close", None)
        if callable(closer):
            closer()
        return True

    def live(self) -> list[Any]:
        with self._lock:
            refs = list(self._refs.values())
        return [ctx for ctx in (ref() for ref in refs) if ctx is not None]

    def close(self) -> int:
        """Close every live context; returns how many were closed."""
        return sum(self.close_context(ctx) for ctx in self.live())

    def __len__(self) -> int:
        return len(self.live())

    def __iter__(self) -> Iterator[Any]:
        return iter(self.live())

    def __contains__(self, context: object) -> bool:
        with self._lock:
            ref = self._refs.get(id(context))
        return ref is not None and ref() is context

    def __enter__(self) -> ContextRegistry:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
