"""Who holds pages of the KV pool: the engine's slots, its preemption policy (pure host logic,
`plan_room`) and `Residency`, which carries it out.

A slot's sequence is resident (its keys and values in the pool) or swapped out (its pages
copied to host memory and given back). When a call needs pages that its shard does not have,
it takes them from other sequences of the same shard, which are swapped out and swapped back
in, bit for bit, when pages free up (`swejax.sampling._engine`). An episode is never cut short
for want of pages; only its real context limit ends it.

Which sequence gives way (`plan_room`), per shard, the needs served oldest first (the
sequence that started first):
1. sequences not sampling (their episode waits on its sandbox), least recently used first;
2. then sequences younger than the one in need, the youngest first (they stop sampling until
   they are back).
A new sequence (a prompt) takes free pages only: admitting it must not push out an episode
already under way. So the oldest sequence can always take a whole shard, and the rollout always
moves on as long as one sequence fits in its shard's pool (the engine checks that at start).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence

from swejax.sampling._calls import DeviceCalls
from swejax.sampling._pages import PageAllocator


@dataclasses.dataclass
class Slot:
    """One slot's bookkeeping, kept on the host and sent with each call; its pages are the
    allocator's."""

    cached: int = 0  # tokens whose K/V are in the cache (or on the host while swapped out)
    pending: int | None = None
    active: bool = False
    budget: int = 0
    stream: int = 0  # the random stream of the sequence (`_streams.stream_id`)
    age: int = 0  # when the sequence started: the older goes first for pages
    last_used: int = 0  # the engine call that last fed or sampled it
    swapped: list | None = None  # its K/V chunks on the host while preempted

    @property
    def length(self) -> int:
        return self.cached + (self.pending is not None)


@dataclasses.dataclass
class Preemption:
    """What preemption moved since the engine was reset or reseeded."""

    preemptions: int = 0  # sequences swapped out of the pool
    swapped_out_tokens: int = 0
    swapped_in_tokens: int = 0
    seconds: float = 0.0  # in swap calls, both ways


@dataclasses.dataclass(frozen=True)
class Need:
    """A slot that must hold `pages` pages in all for its next call."""

    slot: int
    pages: int
    age: int  # when its sequence started: smaller is older
    may_evict: bool  # False for a new sequence: free pages only


@dataclasses.dataclass(frozen=True)
class Holder:
    """A resident slot, as the policy sees it."""

    slot: int
    pages: int  # pages it holds
    age: int
    sampling: bool  # in the middle of a reply
    last_used: int  # the engine call that last fed it or sampled for it


@dataclasses.dataclass(frozen=True)
class RoomPlan:
    granted: tuple[int, ...]  # slots whose need is met, in the order they were served
    evicted: tuple[int, ...]  # slots to swap out first, in order


def plan_room(
    needs: Sequence[Need],
    holders: Sequence[Holder],
    free_pages: dict[int, int],
    shard_of,
) -> RoomPlan:
    """Which needs to meet and whom to swap out for them (see the module docstring).
    `free_pages[g]`: free pages of shard g; `shard_of(slot)`: a slot's shard. A need that
    cannot be met evicts nobody."""
    free = dict(free_pages)
    resident = {h.slot: h for h in holders}
    needing = {n.slot for n in needs}
    granted: list[int] = []
    evicted: list[int] = []
    for need in sorted(needs, key=lambda n: (n.age, n.slot)):
        g = shard_of(need.slot)
        held = resident[need.slot].pages if need.slot in resident else 0
        missing = max(0, need.pages - held)
        if missing > free[g] and need.may_evict:
            victims = _victims(need, resident, needing, granted, g, shard_of)
            if free[g] + sum(resident[v].pages for v in victims) >= missing:
                for victim in victims:
                    if missing <= free[g]:
                        break
                    free[g] += resident.pop(victim).pages
                    evicted.append(victim)
        if missing <= free[g]:
            free[g] -= missing
            granted.append(need.slot)
    return RoomPlan(tuple(granted), tuple(evicted))


def _victims(need, resident, needing, granted, shard, shard_of) -> list[int]:
    """The residents of `shard` that may give way to `need`, in the order they do."""
    mine = [h for h in resident.values() if shard_of(h.slot) == shard and h.slot != need.slot]
    idle = sorted(
        (h for h in mine if not h.sampling and h.slot not in needing),
        key=lambda h: (h.last_used, h.slot),
    )
    younger = sorted(
        (h for h in mine if h.age > need.age and h.slot not in granted),
        key=lambda h: (-h.age, h.slot),
    )
    order = [h.slot for h in idle]
    return order + [h.slot for h in younger if h.slot not in order]


class Residency:
    """Carries out `plan_room` over an engine's slots: pages reserved, sequences swapped out
    to the host and back in (`DeviceCalls.swap_out`, `swap_in`), what moved counted in
    `stats`. On a collective engine every process makes the same swap calls."""

    def __init__(
        self, pages: PageAllocator, calls: DeviceCalls, local: frozenset[int], collective: bool
    ):
        self.pages, self.calls, self.local, self.collective = pages, calls, local, collective
        self.stats = Preemption()

    def pages_for(self, tokens: int) -> int:
        return min(math.ceil(tokens / self.pages.page_size), self.pages.pages_per_slot)

    def make_room(self, state, slots: list[Slot], needs: dict[int, tuple[int, bool]]):
        """(state, the slots that got their pages): each slot of `needs` (slot -> (tokens it
        must hold, may it preempt others)) given pages for them, others preempted as
        `plan_room` says, a swapped-out slot that gets them swapped back in."""
        plan = plan_room(
            [Need(i, self.pages_for(t), slots[i].age, evict) for i, (t, evict) in needs.items()],
            [
                Holder(i, self.pages.page_count(i), s.age, s.active, s.last_used)
                for i, s in enumerate(slots)
                if i in self.local and s.swapped is None and self.pages.page_count(i)
            ],
            {g: self.pages.free_pages(g) for g in range(self.pages.num_shards)},
            self.pages.shard,
        )
        self.swap_out(state, slots, plan.evicted)
        back = []
        for slot in plan.granted:
            if not self.pages.reserve(slot, needs[slot][0]):
                raise AssertionError(f"slot {slot} was granted pages its shard lacks")
            if slots[slot].swapped is not None:
                back.append(slot)
        return self.swap_in(state, slots, back), set(plan.granted)

    def swap_out(self, state, slots: list[Slot], out: Sequence[int]) -> None:
        """Copy the `out` slots' keys and values to the host and free their pages (the
        state's pool is read, not changed)."""
        out = [slot for slot in out if slots[slot].swapped is None]
        if not (out or self.collective):
            return
        begun = time.perf_counter()
        chunks = self.calls.swap_out(state, {i: self.pages_for(slots[i].cached) for i in out})
        for slot, parts in chunks.items():
            self.pages.free(slot)
            slots[slot].swapped = parts
            self.stats.preemptions += 1
            self.stats.swapped_out_tokens += slots[slot].cached
        self.stats.seconds += time.perf_counter() - begun

    def swap_in(self, state, slots: list[Slot], back: Sequence[int]):
        """The state with the `back` slots' keys and values written into the pages they now
        hold."""
        if not (back or self.collective):
            return state
        begun = time.perf_counter()
        state = self.calls.swap_in(state, {slot: slots[slot].swapped for slot in back})
        for slot in back:
            self.stats.swapped_in_tokens += slots[slot].cached
            slots[slot].swapped = None
        self.stats.seconds += time.perf_counter() - begun
        return state
