"""Who holds pages of the KV pool: the engine's preemption policy, pure host logic.

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
from collections.abc import Sequence


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
