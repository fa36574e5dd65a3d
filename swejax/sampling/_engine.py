"""The generation engine: slots over a paged KV cache, fed by prefill / extend, advanced by decode.

A slot holds one sequence. Its state is the tokens whose keys and values are in the cache
(`length` of them) and one pending token: the last token given or sampled, whose K/V are
computed when it is fed at the next decode step or extend. So each token runs through the model
exactly once over a whole multi-turn episode (linear prefill), and no logits are kept between
calls.

Keys and values live in one pool of pages shared by all slots (`swejax.models.kv_cache`). The
host hands pages to a slot as it grows and takes them back when it is freed (`PageAllocator`),
so memory follows the tokens actually held, not slots x longest sequence. Each call attends
over the smallest power-of-two number of pages that covers the sequences it serves, so short
sequences cost little and there are only log2(pages per slot) shapes to compile.

On a mesh the slots are split over the batch axes (data, fsdp: those that divide the slots), and
so are the pages: each batch shard owns an equal part of the pool and a free list of its own,
and gives its slots only its own pages, so a device holds its slots' K/V and no one else's
(`swejax.models.kv_cache`). A shard whose pages run out ends its own slots' turns
(OUT_OF_PAGES); the other shards go on. Ingest calls put each shard's rows in that shard's
block of rows.

The device work is three jitted programs (`swejax.sampling._programs`) over one donated state
(`swejax.sampling._state`), each with fixed shapes per page bucket and fixed output shardings:
the cache is updated in place and nothing recompiles once each bucket has been seen. The
model's parameters are read from the model at each call, so the engine samples from whatever
weights the trainer has just written (one copy of the weights).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from swejax.config import EngineConfig
from swejax.models.kv_cache import pool_page_axes
from swejax.models.qwen2 import Qwen2
from swejax.sampling._pages import PageAllocator
from swejax.sampling._programs import (
    DecodeProgram,
    IngestProgram,
    SetSlotProgram,
    StopReason,
    jit_decode,
    jit_ingest,
    jit_set_slot,
)
from swejax.sampling._state import new_state, page_shards, replicated, state_shardings
from swejax.sampling._strategies import SamplingParams
from swejax.sampling._streams import stream_words
from swejax.sharding import activation_mesh


class ContextFull(Exception):
    """A slot was given more tokens than it (or the page pool) can hold; the episode must end."""


@dataclasses.dataclass(frozen=True)
class DecodeResult:
    """What one `decode` call produced, per slot (host numpy)."""

    tokens: list[np.ndarray]  # new tokens of each slot (empty for idle slots)
    logprobs: list[np.ndarray]  # their log-probabilities under the sampled distribution
    stopped: np.ndarray  # [S] bool: the slot ended its turn during this call
    reasons: np.ndarray  # [S] StopReason of the slots that stopped


@dataclasses.dataclass
class _Slot:
    """The host's copy of one slot's bookkeeping (the device state is never read back); its
    pages are the allocator's."""

    cached: int = 0  # tokens whose K/V are in the cache
    pending: int | None = None
    active: bool = False
    budget: int = 0
    stream: int = 0  # the random stream of the sequence (`_streams.stream_id`)

    @property
    def length(self) -> int:
        return self.cached + (self.pending is not None)


class Engine:
    """Slots over one paged KV cache on the model's mesh; see the module docstring."""

    def __init__(
        self,
        model: Qwen2,
        config: EngineConfig,
        sampling: SamplingParams | None = None,
        mesh: Mesh | None = None,
        seed: int = 0,
    ):
        self.model, self.config, self.mesh = model, config, mesh
        self.sampling = sampling or SamplingParams()
        self._graphdef = nnx.graphdef(model)
        self._seed = seed
        shards = page_shards(config, mesh)
        if config.pool_pages % shards:
            raise ValueError(
                f"EngineConfig.num_pages={config.pool_pages} must be a multiple of the "
                f"{shards} batch shards the slots are split over "
                f"{pool_page_axes(mesh, config.num_slots)}: each shard owns an equal part of "
                "the pool"
            )
        self._pages = PageAllocator(
            config.num_slots, config.pool_pages, shards, config.page_size, config.pages_per_slot
        )
        shardings = self._shardings = state_shardings(model.cfg, config, mesh)
        # Fixed output shardings: every call hands the state back laid out exactly as it came,
        # so no call sees a new input layout and recompiles. Host values go in as numpy: a jax
        # array made inside the mesh context would carry a different sharding than one made
        # outside, and each sharding is its own compiled program.
        self._ingest = jit_ingest(shardings)
        self._decode = jit_decode(shardings)
        self._set_slot = jit_set_slot(shardings)
        self.reset()

    # --- layout ---------------------------------------------------------------------------

    def reseed(self, seed: int) -> None:
        """Draw from a new random stream from now on (the engine must be idle). After
        `release`, this allocates the pools again, every slot empty."""
        if any(s.active for s in self._slots):
            raise RuntimeError("reseed needs an idle engine")
        self._seed = seed
        if self.state is None:
            self.reset()
            return
        key = jax.device_put(jax.random.key(seed), replicated(self.mesh))
        self.state = self.state._replace(key=key)

    # --- slots ----------------------------------------------------------------------------

    def reset(self) -> None:
        """Every slot empty and every page free (the pools are reallocated)."""
        self.state = new_state(self.model.cfg, self.config, self.mesh, self._seed)
        self._slots = [_Slot() for _ in range(self.config.num_slots)]
        self._pages.reset()

    def release(self) -> None:
        """Give the KV page pools' device memory back (between rollouts, so the train step has
        it); the compiled programs stay. `reset` or `reseed` allocates the pools again."""
        if self.state is not None:
            for pool in self.state.cache:
                pool.delete()
        self.state = None
        self._slots = [_Slot() for _ in range(self.config.num_slots)]

    def free(self, slot: int) -> None:
        """End a slot's sequence and return its pages; their stale contents are never read."""
        self._check_slot(slot)
        self._pages.free(slot)
        self._slots[slot] = _Slot()
        self._push(slot)

    def length(self, slot: int) -> int:
        """Tokens in the slot's sequence so far, the pending one included."""
        return self._slots[slot].length

    def free_pages(self) -> int:
        """Free pages over all batch shards."""
        return self._pages.free_pages()

    def _push(self, slot: int) -> None:
        """Send the host's bookkeeping of one slot to the device."""
        s, cfg = self._slots[slot], self.config
        limit = min(cfg.capacity, self._pages.page_count(slot) * cfg.page_size)
        with activation_mesh(self.mesh):
            self.state = self._set_slot(
                SetSlotProgram(),
                self.state,
                np.int32(slot),
                self._pages.table_row(slot),
                np.int32(limit),
                np.int32(s.cached),
                np.int32(s.pending or 0),
                np.bool_(s.active),
                np.int32(s.budget),
                stream_words(s.stream),
            )

    def _bucket(self, pages: int) -> int:
        """The number of pages a call attends over: a power of two, at most pages_per_slot."""
        return min(self.config.pages_per_slot, 1 << max(0, pages - 1).bit_length())

    @property
    def _shard_rows(self) -> int:
        """Rows of each batch shard in an ingest call (`ingest_rows` over all of them, rounded
        up to a multiple of the shards)."""
        shards = self._pages.num_shards
        return math.ceil(min(self.config.ingest_rows, self.config.num_slots) / shards)

    def _ingest_groups(self, rows: list[tuple[int, list[int]]]) -> list[list]:
        """(slot, tokens) rows cut into ingest calls of at most `_shard_rows` rows per shard."""
        per, shard = self._shard_rows, self._pages.shard
        by_shard = [
            [row for row in rows if shard(row[0]) == g] for g in range(self._pages.num_shards)
        ]
        calls = max(math.ceil(len(part) / per) for part in by_shard)
        return [
            [row for part in by_shard for row in part[c * per : (c + 1) * per]]
            for c in range(calls)
        ]

    def _run_ingest(self, visible: int, rows: list[tuple[int, list[int]]]) -> None:
        """One ingest call over (slot, tokens) rows, at most `_shard_rows` of each shard, padded
        to full shape: shard g's rows fill block g of the call's rows, as the page pool's
        shards expect. Padding rows name a slot of their block's shard and feed nothing."""
        per, shards = self._shard_rows, self._pages.num_shards
        first_slots = np.arange(shards, dtype=np.int32) * self._pages.slots_per_shard
        slots = np.repeat(first_slots, per)
        tokens = np.zeros((per * shards, self.config.ingest_chunk), np.int32)
        counts = np.zeros(per * shards, np.int32)
        used = [0] * shards
        for slot, part in rows:
            g = self._pages.shard(slot)
            r = g * per + used[g]
            used[g] += 1
            slots[r], counts[r] = slot, len(part)
            tokens[r, : len(part)] = part
        program = IngestProgram(self._graphdef, visible_pages=visible)
        with activation_mesh(self.mesh):
            self.state = self._ingest(
                program, nnx.state(self.model), self.state, slots, tokens, counts
            )

    def _run_decode(self, visible: int, num_steps: int):
        program = DecodeProgram(
            self._graphdef,
            visible_pages=visible,
            num_steps=num_steps,
            sampling=self.sampling,
            stop_tokens=self.config.stop_tokens,
            split_layer_weights=self.config.split_layer_weights,
        )
        with activation_mesh(self.mesh):
            self.state, out = self._decode(
                program, nnx.state(self.model), self.state, np.int32(self.config.capacity)
            )
        return out

    def warm_up(self) -> None:
        """Compile ingest and decode for every page bucket now, not in the middle of a rollout.

        Each program runs once with nothing to do (no tokens, no active slot), so the state is
        unchanged.
        """
        if any(s.active or s.pending is not None for s in self._slots):
            raise RuntimeError("warm_up must run on an empty engine")
        buckets = sorted({self._bucket(n) for n in range(1, self.config.pages_per_slot + 1)})
        self._push(0)
        for visible in buckets:
            self._run_ingest(visible, [])
            self._run_decode(visible, self.config.steps_per_call)

    # --- feeding tokens ---------------------------------------------------------------------

    def prefill(self, slot: int, tokens: Sequence[int], stream: int | None = None) -> None:
        """Start a new sequence in `slot` with `tokens` (a prompt). Its tokens are drawn from
        `stream` (`stream_id` of what the sequence is; default: the slot's number), so the same
        stream and prompt sample the same tokens in any slot, batch or order of calls."""
        self.prefill_many([(slot, tokens)], None if stream is None else [stream])

    def prefill_many(
        self,
        requests: Sequence[tuple[int, Sequence[int]]],
        streams: Sequence[int] | None = None,
    ) -> None:
        """Start new sequences in several slots, fed together (`ingest_rows` per call);
        `streams[i]` is request i's random stream (default: its slot's number)."""
        if streams is not None and len(streams) != len(requests):
            raise ValueError(f"{len(streams)} streams for {len(requests)} prefill requests")
        for i, (slot, _) in enumerate(requests):
            self.free(slot)
            self._slots[slot].stream = slot if streams is None else streams[i]
        self.extend_many(requests)

    def extend(self, slot: int, tokens: Sequence[int]) -> None:
        """Append `tokens` (an observation, say) after everything the slot already holds."""
        self.extend_many([(slot, tokens)])

    def extend_many(self, requests: Sequence[tuple[int, Sequence[int]]]) -> None:
        """Append tokens to several slots; all are checked before any is changed."""
        requests = [(slot, [int(t) for t in tokens]) for slot, tokens in requests if len(tokens)]
        if len({slot for slot, _ in requests}) != len(requests):
            raise ValueError("extend_many got the same slot twice")
        for slot, tokens in requests:
            self._check_slot(slot)
            total = self._slots[slot].length + len(tokens)
            if total > self.config.capacity:
                raise ContextFull(
                    f"slot {slot} holds {self._slots[slot].length} tokens; {len(tokens)} more "
                    f"exceed its capacity of {self.config.capacity}"
                )
        queue = []
        for slot, tokens in requests:
            s = self._slots[slot]
            if not self._pages.reserve(slot, s.length + len(tokens)):
                raise ContextFull(f"the KV page pool has no free page left for slot {slot}")
            sequence = ([] if s.pending is None else [s.pending]) + tokens
            to_ingest, s.pending = sequence[:-1], sequence[-1]
            self._push(slot)  # the new pages, before the tokens that use them
            queue.append((slot, to_ingest))
        chunk, offset = self.config.ingest_chunk, 0
        while True:
            rows = [
                (slot, ids[offset : offset + chunk]) for slot, ids in queue if len(ids) > offset
            ]
            if not rows:
                break
            for group in self._ingest_groups(rows):
                held = max(self._pages.page_count(slot) for slot, _ in group)
                visible = self._bucket(held)
                self._run_ingest(visible, group)
                for slot, part in group:
                    self._slots[slot].cached += len(part)
            offset += chunk
        for slot, _ in requests:
            self._push(slot)  # the new pending token

    # --- decoding ---------------------------------------------------------------------------

    def start_turn(self, slot: int, max_tokens: int) -> None:
        """Let `slot` sample up to `max_tokens` tokens in the coming decode calls."""
        self._check_slot(slot)
        s = self._slots[slot]
        if s.pending is None:
            raise ValueError(f"slot {slot} is empty: prefill it before decoding")
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be positive, got {max_tokens}")
        if s.length >= self.config.capacity:
            raise ContextFull(f"slot {slot} is full ({self.config.capacity} tokens)")
        s.active, s.budget = True, max_tokens
        self._push(slot)

    def decode(self, num_steps: int | None = None) -> DecodeResult:
        """Run up to `num_steps` (default: config.steps_per_call) steps for every active slot."""
        num_steps = num_steps or self.config.steps_per_call
        if self.state is None:
            raise RuntimeError("the engine's KV cache was released; reset() or reseed() first")
        active = [i for i, s in enumerate(self._slots) if s.active]
        for slot in active:
            # Pages for this call's tokens; a slot the pool cannot serve stops OUT_OF_PAGES.
            before = self._pages.page_count(slot)
            self._pages.reserve(slot, self._slots[slot].length + num_steps)
            if self._pages.page_count(slot) != before:
                self._push(slot)
        held = (self._pages.page_count(i) for i in active)
        visible = self._bucket(max(held, default=1))
        out = self._run_decode(visible, num_steps)
        tokens, logprobs, emitted, reasons = (np.asarray(x) for x in out)
        stopped = np.zeros(self.config.num_slots, bool)
        result_tokens, result_logprobs = [], []
        for slot, s in enumerate(self._slots):
            mask = emitted[slot]
            result_tokens.append(tokens[slot][mask])
            result_logprobs.append(logprobs[slot][mask])
            if mask.any():
                # Every emitted token but the last is now cached; the last is pending.
                s.cached += int(mask.sum())
                s.pending = int(tokens[slot][mask][-1])
                s.budget -= int(mask.sum())
                stopped[slot] = reasons[slot] != StopReason.RUNNING
                s.active = not stopped[slot]
        return DecodeResult(result_tokens, result_logprobs, stopped, reasons)

    def _check_slot(self, slot: int) -> None:
        if self.state is None:
            raise RuntimeError("the engine's KV cache was released; reset() or reseed() first")
        if not 0 <= slot < self.config.num_slots:
            raise IndexError(f"slot {slot} out of range [0, {self.config.num_slots})")
