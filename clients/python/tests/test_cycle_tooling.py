import gc
import weakref

import pytest

from oversight_client import (
    ContextRegistry,
    LeakDetected,
    find_cycles,
    last_cycle_report,
    leak_check,
)

NODE = f"{__name__}.Node"
kept_forever = []


class Node:
    def __init__(self, other=None):
        self.other = other


class Slotted:
    __slots__ = ("other",)  # no __weakref__: tracked by id instead

    def __init__(self):
        self.other = None


def make_cycles(pairs, cls=Node):
    for _ in range(pairs):
        a, b = cls(), cls()
        a.other, b.other = b, a


def make_chains(length):
    head = None
    for _ in range(length):
        head = Node(head)


class AgentContext:
    def __init__(self, parent=None):
        self.parent = parent
        self.children = []
        if parent is not None:
            parent.children.append(self)

    def close(self):
        for child in self.children:
            child.close()
        self.children = []
        self.parent = None


def test_it_counts_objects_kept_alive_only_by_cycles(paused_gc):
    make_cycles(3)

    report = find_cycles()

    assert report.by_type[NODE] == 6
    assert report.total >= 6
    assert (NODE, 6) in report.top()
    assert last_cycle_report() is report


def test_it_ignores_objects_freed_by_reference_counting(paused_gc):
    make_chains(10)

    report = find_cycles()

    assert NODE not in report.by_type


def test_it_ignores_cycles_that_are_still_in_use(paused_gc):
    a, b = Node(), Node()
    a.other, b.other = b, a

    report = find_cycles()

    assert NODE not in report.by_type
    assert a.other is b


def test_it_frees_what_it_found_and_leaves_gc_garbage_as_it_was(paused_gc):
    a, b = Node(), Node()
    a.other, b.other = b, a
    watch = weakref.ref(a)
    garbage_before = len(gc.garbage)
    del a, b

    find_cycles()

    assert watch() is None
    assert len(gc.garbage) == garbage_before


def test_it_restores_the_gc_flags(paused_gc):
    gc.set_debug(gc.DEBUG_UNCOLLECTABLE)
    try:
        make_cycles(1)
        find_cycles()
        assert gc.get_debug() == gc.DEBUG_UNCOLLECTABLE
    finally:
        gc.set_debug(0)


def test_it_restores_the_gc_flags_and_garbage_even_when_counting_fails(paused_gc):
    def broken(obj):
        raise RuntimeError("grouping failed")

    flags, garbage_before = gc.get_debug(), len(gc.garbage)
    make_cycles(2)

    with pytest.raises(RuntimeError, match="grouping failed"):
        find_cycles(group_by=broken)

    assert gc.get_debug() == flags
    assert len(gc.garbage) == garbage_before


def test_it_leaves_the_garbage_to_a_caller_who_saves_all(paused_gc):
    gc.set_debug(gc.DEBUG_SAVEALL)
    start = len(gc.garbage)
    try:
        make_cycles(1)
        report = find_cycles()
        saved = [type(o) for o in gc.garbage[start:]]
        assert gc.get_debug() == gc.DEBUG_SAVEALL
    finally:
        del gc.garbage[start:]
        gc.set_debug(0)

    assert report.by_type[NODE] == 2
    assert saved.count(Node) == 2


def test_it_groups_by_a_key_of_the_callers_choice(paused_gc):
    make_cycles(2)

    report = find_cycles(group_by=lambda obj: type(obj).__module__)

    assert report.by_type[__name__] >= 4


def test_it_passes_a_block_whose_cycles_the_collector_frees(paused_gc):
    with leak_check(Node) as report:
        make_cycles(2)

    assert (report.created, report.surviving) == (4, 0)


def test_it_detects_objects_that_outlive_the_block():
    def work():
        make_cycles(1)  # freed by the collector
        make_chains(3)  # freed at once
        kept_forever.append(Node())

    with pytest.raises(LeakDetected) as caught, leak_check(Node):
        work()

    kept_forever.clear()
    report = caught.value.report
    assert report.surviving == 1 and report.by_type == {NODE: 1}
    assert str(caught.value).startswith("1 of ")
    assert "objects surviving GC" in str(caught.value)


def test_it_detects_a_cycle_still_reachable_after_the_block(paused_gc):
    def work():
        make_cycles(1)
        a, b = Node(), Node()
        a.other, b.other = b, a
        kept_forever.append(a)

    with (pytest.raises(LeakDetected, match=f"2 of 4 objects surviving GC: {NODE}=2"),
          leak_check(Node)):
        work()

    kept_forever.clear()


def test_it_ignores_objects_that_existed_before_the_block():
    old = Node()

    with leak_check(Node) as report:
        old.other = old  # alive after the block, but not made in it

    assert (report.created, report.surviving) == (0, 0)
    old.other = None


def test_it_tracks_types_without_weak_references(paused_gc):
    def work():
        make_cycles(1, Slotted)
        kept_forever.append(Slotted())

    with pytest.raises(LeakDetected, match=r"1 of 3 objects"), leak_check(Slotted):
        work()

    kept_forever.clear()


def test_it_does_not_check_when_the_block_raises():
    def work():
        kept_forever.append(Node())
        raise ValueError("inner")

    with pytest.raises(ValueError, match="inner"), leak_check(Node):
        work()

    kept_forever.clear()


def test_it_needs_a_type_to_track():
    with pytest.raises(TypeError), leak_check():
        pass


def test_it_holds_contexts_without_keeping_them_alive():
    registry = ContextRegistry()
    root = registry.register(AgentContext())

    assert root in registry and len(registry) == 1
    del root

    assert len(registry) == 0
    assert registry.collected_unclosed == 1


def test_it_closes_contexts_so_reference_counting_frees_them(paused_gc):
    registry = ContextRegistry()
    root = registry.register(AgentContext())
    child = registry.register(AgentContext(root))
    watch = [weakref.ref(root), weakref.ref(child)]

    assert registry.close() == 2
    del root, child

    # No collection ran: closing broke the parent/child cycle.
    assert [w() for w in watch] == [None, None]
    assert len(registry) == 0 and registry.collected_unclosed == 0


def test_it_closes_one_context_on_request():
    registry = ContextRegistry()
    keep, drop = registry.register(AgentContext()), registry.register(AgentContext())
    drop.children.append(AgentContext())

    assert registry.close_context(drop) is True
    assert registry.close_context(drop) is False
    assert drop.children == []
    assert registry.live() == [keep]


def test_it_closes_everything_on_leaving_the_with_block():
    with ContextRegistry() as registry:
        context = registry.register(AgentContext(AgentContext()))

    assert context.parent is None and len(registry) == 0
