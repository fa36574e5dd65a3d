"""`PageAllocator`: the host's record of which KV pages of the pool each slot holds.

The pool's P pages are split into equal blocks, one per batch shard: shard g owns the global
ids [g * P / shards, (g + 1) * P / shards), and slot s belongs to shard s // (S / shards), as
the device lays out slots and pages (`swejax.models.kv_cache`). A slot only ever gets pages of
its own shard, so a device holds its slots' keys and values and no one else's, and a shard
that runs dry ends its own slots' turns without taking another shard's pages.

A slot's page-table row holds ids local to its shard (global id - g * P / shards), and
`unassigned` (P / shards, one past the shard's last page, where the cache drops writes) where
it holds no page.

Pure host bookkeeping: the page tables go to the device with each call, never back.
"""

from __future__ import annotations

import math

import numpy as np


class PageAllocator:
    """One free list per batch shard, and the pages each slot holds, in the order it got them."""

    def __init__(
        self,
        num_slots: int,
        num_pages: int,
        num_shards: int,
        page_size: int,
        pages_per_slot: int,
    ):
        if num_slots % num_shards or num_pages % num_shards:
            raise ValueError(
                f"{num_slots} slots and {num_pages} pages must both split evenly over "
                f"{num_shards} batch shards"
            )
        self.num_slots, self.num_pages, self.num_shards = num_slots, num_pages, num_shards
        self.page_size, self.pages_per_slot = page_size, pages_per_slot
        self.pages_per_shard = num_pages // num_shards
        self.slots_per_shard = num_slots // num_shards
        self.reset()

    @property
    def unassigned(self) -> int:
        """The page-table entry of a page a slot does not hold (one past a shard's last)."""
        return self.pages_per_shard

    def reset(self) -> None:
        """Every page free, no slot holding any."""
        n = self.pages_per_shard
        # Each shard's free list holds its pages' global ids and is popped from the end, so
        # pages are handed out lowest id first, and freed pages are the next ones handed out.
        self._free = [list(range((g + 1) * n - 1, g * n - 1, -1)) for g in range(self.num_shards)]
        self._held: list[list[int]] = [[] for _ in range(self.num_slots)]

    def shard(self, slot: int) -> int:
        """The batch shard that holds the slot (and the pages it may use)."""
        return slot // self.slots_per_shard

    def pages(self, slot: int) -> tuple[int, ...]:
        """Global ids of the slot's pages, in the order of its tokens."""
        return tuple(self._held[slot])

    def page_count(self, slot: int) -> int:
        """Pages the slot holds."""
        return len(self._held[slot])

    def free_pages(self, shard: int | None = None) -> int:
        """Free pages of one batch shard, or of all of them."""
        if shard is None:
            return sum(len(free) for free in self._free)
        return len(self._free[shard])

    def reserve(self, slot: int, tokens: int) -> bool:
        """Give the slot pages of its shard for `tokens` tokens in all (at most a full slot's
        pages); False if the shard ran dry first (the slot keeps what it got)."""
        held, free = self._held[slot], self._free[self.shard(slot)]
        needed = min(math.ceil(tokens / self.page_size), self.pages_per_slot)
        while len(held) < needed and free:
            held.append(free.pop())
        return len(held) >= needed

    def free(self, slot: int) -> None:
        """Take back all of the slot's pages; the next slot of its shard gets them in the same
        order (their stale contents are never read: a slot reads only positions it wrote)."""
        self._free[self.shard(slot)] += reversed(self._held[slot])
        self._held[slot] = []

    def table_row(self, slot: int) -> np.ndarray:
        """The slot's page-table row [pages_per_slot] (int32): shard-local ids, then
        `unassigned`."""
        held = self._held[slot]
        row = np.full(self.pages_per_slot, self.unassigned, np.int32)
        row[: len(held)] = np.asarray(held, np.int32) - self.shard(slot) * self.pages_per_shard
        return row
