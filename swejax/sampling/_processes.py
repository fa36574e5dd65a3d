"""The engine across processes: which slots are this process's, and the page buckets all
processes agree on for a call (`swejax.sampling._engine`)."""

from __future__ import annotations

import jax
import numpy as np

from swejax import distributed


def local_slots(rows: jax.sharding.Sharding, num_slots: int) -> tuple[int, ...]:
    """The slots whose rows live on this process's devices. A slot's rows must live on one
    process only (each is fed, sampled and freed by one); a layout that splits a batch shard
    over processes (tensor or context axes across hosts) is refused."""
    owners: dict[int, set[int]] = {}
    for device, index in rows.devices_indices_map((num_slots,)).items():
        for slot in range(num_slots)[index[0]]:
            owners.setdefault(slot, set()).add(device.process_index)
    shared = [slot for slot, processes in owners.items() if len(processes) > 1]
    if shared:
        raise ValueError(
            f"slot {shared[0]}'s shard spans processes {sorted(owners[shared[0]])}: the "
            "engine's slots are split over the batch axes, and each batch shard must sit on "
            "one host (keep the tensor and context axes within a host)"
        )
    me = jax.process_index()
    return tuple(slot for slot in range(num_slots) if me in owners[slot])


def agreed_buckets(local: list[int]) -> list[int]:
    """Page buckets of the coming calls as every process makes them: as many calls as the
    process with most, each attending over the most pages any process needs for it."""
    if jax.process_count() == 1:
        return local
    counts = distributed.allgather(np.int64(len(local)))
    padded = np.ones(int(counts.max()), np.int64)
    padded[: len(local)] = local
    return [int(b) for b in distributed.allgather(padded).max(axis=0)]
