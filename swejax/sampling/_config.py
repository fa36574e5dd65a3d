"""`EngineConfig`: the shape of a generation engine (slots, capacity, pages, call sizes)."""

from __future__ import annotations

import dataclasses
import math


@dataclasses.dataclass(frozen=True)
class EngineConfig:
    num_slots: int
    capacity: int  # longest sequence a slot holds, prompt and generations together
    page_size: int = 64  # tokens per KV page
    # Pages in the pool, over all batch shards (a multiple of their number: each shard owns
    # num_pages / shards of them); 0: enough for every slot at full capacity.
    num_pages: int = 0
    chunk: int = 128  # tokens per slot per ingest call
    # Slots fed together by one ingest call; on a mesh, rounded up to a multiple of the batch
    # shards (each shard's rows come from its own slots).
    ingest_rows: int = 8
    steps_per_call: int = 16  # decode steps per host round trip
    stop_tokens: tuple[int, ...] = ()
    # Copy the layer weights out of the stacked arrays once per decode call rather than once
    # per step (Qwen2.split_layer_weights): much faster decode, for one extra copy of the layer
    # weights in memory while a decode call runs.
    split_layer_weights: bool = True

    def __post_init__(self) -> None:
        for name in (
            "num_slots",
            "capacity",
            "page_size",
            "chunk",
            "ingest_rows",
            "steps_per_call",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"EngineConfig.{name} must be positive, got {getattr(self, name)}")
        if self.num_pages < 0:
            raise ValueError(f"EngineConfig.num_pages must be >= 0, got {self.num_pages}")

    @property
    def pages_per_slot(self) -> int:
        return math.ceil(self.capacity / self.page_size)

    @property
    def pool_pages(self) -> int:
        return self.num_pages or self.num_slots * self.pages_per_slot
