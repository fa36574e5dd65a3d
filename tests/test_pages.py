"""The host page allocator alone: shards own disjoint pages, reserve and free round trips, a dry
shard stays dry, page-table rows in shard-local ids, and the order freed pages come back in."""

import numpy as np
import pytest

from swejax.sampling._pages import PageAllocator


def _allocator(num_slots=8, num_pages=16, num_shards=4, page_size=4, pages_per_slot=4):
    return PageAllocator(num_slots, num_pages, num_shards, page_size, pages_per_slot)


def test_each_shard_hands_out_only_its_own_block_of_pages():
    pages = _allocator()  # 2 slots and 4 pages per shard
    assert [pages.shard(slot) for slot in range(8)] == [0, 0, 1, 1, 2, 2, 3, 3]
    taken = {}
    for slot in range(8):
        assert pages.reserve(slot, 8)  # 2 pages each: every page of every shard
        taken[slot] = pages.pages(slot)
    for slot, held in taken.items():
        g = pages.shard(slot)
        assert len(held) == 2 and all(4 * g <= p < 4 * (g + 1) for p in held), (slot, held)
    every = [p for held in taken.values() for p in held]
    assert sorted(every) == list(range(16)), "no page given twice, none left out"
    assert pages.free_pages() == 0


def test_reserve_counts_tokens_in_pages_and_stops_at_a_full_slot():
    pages = _allocator()
    assert pages.reserve(0, 1) and pages.pages(0) == (0,)
    assert pages.reserve(0, 4) and pages.pages(0) == (0,), "4 tokens still fit one page"
    assert pages.reserve(0, 5) and pages.pages(0) == (0, 1)
    assert pages.reserve(0, 2) and pages.pages(0) == (0, 1), "reserve never gives pages back"
    assert pages.page_count(0) == 2
    # More tokens than a slot holds: its pages_per_slot and no more.
    pages = _allocator(num_pages=32, pages_per_slot=3)
    assert pages.reserve(1, 100) and pages.page_count(1) == 3
    assert pages.free_pages(0) == 8 - 3


def test_reserve_and_free_round_trip():
    pages = _allocator()
    assert pages.reserve(2, 12) and pages.free_pages() == 16 - 3
    assert pages.free_pages(1) == 1 and pages.free_pages(0) == 4
    pages.free(2)
    assert pages.pages(2) == () and pages.free_pages() == 16 and pages.free_pages(1) == 4
    pages.free(2)  # freeing an empty slot changes nothing
    assert pages.free_pages() == 16
    assert pages.reserve(3, 16) and pages.pages(3) == (4, 5, 6, 7)


def test_a_shard_that_runs_dry_does_not_take_another_shards_pages():
    pages = _allocator()
    assert pages.reserve(0, 12)  # 3 of shard 0's 4 pages
    assert not pages.reserve(1, 8), "shard 0 has one page left, slot 1 asked for two"
    assert pages.pages(1) == (3,), "the slot keeps the page it got"
    assert pages.free_pages(0) == 0
    assert not pages.reserve(1, 12)
    assert pages.pages(1) == (3,)
    assert [pages.free_pages(g) for g in range(4)] == [0, 4, 4, 4]
    assert pages.reserve(2, 16) and pages.pages(2) == (4, 5, 6, 7)


def test_page_table_rows_hold_shard_local_ids_then_unassigned():
    pages = _allocator()
    assert pages.unassigned == 4
    np.testing.assert_array_equal(pages.table_row(5), [4, 4, 4, 4])
    assert pages.reserve(5, 9)  # shard 2: global pages 8, 9, 10
    assert pages.pages(5) == (8, 9, 10)
    row = pages.table_row(5)
    assert row.dtype == np.int32
    np.testing.assert_array_equal(row, [0, 1, 2, 4])
    assert pages.reserve(4, 4)  # the shard's last page, 11
    np.testing.assert_array_equal(pages.table_row(4), [3, 4, 4, 4])
    pages.free(5)
    np.testing.assert_array_equal(pages.table_row(5), [4, 4, 4, 4])


def test_freed_pages_come_back_in_the_order_they_were_given():
    pages = _allocator(num_slots=2, num_pages=8, num_shards=1, pages_per_slot=8)
    assert pages.reserve(0, 12) and pages.pages(0) == (0, 1, 2)
    assert pages.reserve(1, 4) and pages.pages(1) == (3,)
    pages.free(0)
    assert pages.reserve(1, 20) and pages.pages(1) == (3, 0, 1, 2, 4)
    pages.free(1)
    assert pages.reserve(0, 32)
    assert pages.pages(0) == (3, 0, 1, 2, 4, 5, 6, 7)
    np.testing.assert_array_equal(pages.table_row(0), [3, 0, 1, 2, 4, 5, 6, 7])


def test_reset_frees_every_page():
    pages = _allocator()
    for slot in range(8):
        pages.reserve(slot, 16)
    assert pages.free_pages() == 0
    pages.reset()
    assert pages.free_pages() == 16 and all(pages.pages(slot) == () for slot in range(8))
    assert pages.reserve(7, 4) and pages.pages(7) == (12,)


def test_slots_and_pages_must_split_evenly_over_the_shards():
    with pytest.raises(ValueError, match="split evenly over 4 batch shards"):
        _allocator(num_pages=10)
    with pytest.raises(ValueError, match="split evenly over 4 batch shards"):
        _allocator(num_slots=6)


def test_room_is_made_oldest_first_from_idle_sequences_then_younger_ones():
    from swejax.sampling._admission import Holder, Need, plan_room

    def shard_of(slot):
        return slot // 4  # slots 0-3 in shard 0, 4-7 in shard 1

    holders = [
        Holder(0, pages=3, age=1, sampling=True, last_used=9),
        Holder(1, pages=2, age=2, sampling=False, last_used=5),  # idle, used last at 5
        Holder(2, pages=2, age=3, sampling=False, last_used=3),  # idle, used last at 3
        Holder(3, pages=1, age=4, sampling=True, last_used=9),
        Holder(5, pages=4, age=5, sampling=False, last_used=1),  # another shard's
    ]
    free = {0: 0, 1: 0}
    # Free pages enough: nobody moves.
    assert plan_room([Need(0, 3, 1, True)], holders, free, shard_of).evicted == ()
    # The oldest needs 3 more pages: the least recently used idle one first, then the other.
    plan = plan_room([Need(0, 6, 1, True)], holders, free, shard_of)
    assert plan.granted == (0,) and plan.evicted == (2, 1)
    # Past the idle ones, the youngest sampling sequence gives way; never an older one.
    plan = plan_room([Need(0, 8, 1, True)], holders, free, shard_of)
    assert plan.granted == (0,) and plan.evicted == (2, 1, 3)
    plan = plan_room([Need(3, 4, 4, True)], holders, free, shard_of)
    assert plan.granted == (3,) and plan.evicted == (2, 1)
    plan = plan_room([Need(3, 9, 4, True)], holders, free, shard_of)
    assert (plan.granted, plan.evicted) == ((), ())  # cannot be met: nobody moves
    # A new sequence takes free pages only; another shard's pages are never taken.
    assert plan_room([Need(4, 1, 9, False)], holders, {0: 0, 1: 0}, shard_of).granted == ()
    assert plan_room([Need(4, 1, 9, False)], holders, {0: 0, 1: 1}, shard_of).granted == (4,)
    assert plan_room([Need(6, 5, 6, True)], holders, free, shard_of).evicted == ()
    # Needs met in age order: the older of two swapped-out sequences takes the free pages,
    # the younger then pushes out the shard's idle one.
    plan = plan_room([Need(6, 4, 7, True), Need(7, 4, 6, True)], holders, {0: 0, 1: 4}, shard_of)
    assert plan.granted == (7, 6) and plan.evicted == (5,)
