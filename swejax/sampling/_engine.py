"""The generation engine: slots over a paged KV cache, fed by prefill / extend, advanced by decode.

A slot holds one sequence. Its state is the tokens whose keys and values are in the cache
(`length` of them) and one pending token: the last token given or sampled, whose K/V are
computed when it is fed at the next decode step or extend. So each token runs through the model
exactly once over a whole multi-turn episode (linear prefill), and no logits are kept between
calls.

Keys and values live in one pool of pages shared by all slots (`swejax.models.kv_cache`). The
host hands pages to a slot as it grows and takes them back when it is freed, so memory follows
the tokens actually held, not slots x longest sequence. Each call attends over the smallest
power-of-two number of pages that covers the sequences it serves, so short sequences cost
little and there are only log2(pages per slot) shapes to compile.

On a mesh the slots are split over the batch axes (data, fsdp: those that divide the slots), and
so are the pages: each batch shard owns an equal part of the pool and a free list of its own,
and gives its slots only its own pages, so a device holds its slots' K/V and no one else's
(`swejax.models.kv_cache`). A shard whose pages run out ends its own slots' turns
(OUT_OF_PAGES); the other shards go on. Ingest calls put each shard's rows in that shard's
block of rows.

Every jitted call has fixed shapes per page bucket, fixed output shardings, and donates the
state: the cache is updated in place and nothing recompiles once each bucket has been seen. The
model's parameters are read from the model at each call, so the engine samples from whatever
weights the trainer has just written (one copy of the weights).
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec, SingleDeviceSharding

from swejax.models.kv_cache import LayerCache, num_shards, pool_page_axes, pool_spec
from swejax.models.qwen2 import Qwen2
from swejax.sampling._strategies import SamplingParams, sample
from swejax.sharding import activation_mesh


class StopReason(enum.IntEnum):
    RUNNING = 0
    STOP_TOKEN = 1  # sampled an end-of-turn token
    BUDGET = 2  # sampled its per-turn token budget
    CONTEXT_FULL = 3  # the sequence reached the slot's capacity
    OUT_OF_PAGES = 4  # the shared page pool had no page left for it


class ContextFull(Exception):
    """A slot was given more tokens than it (or the page pool) can hold; the episode must end."""


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


def cache_bytes_per_token(model_cfg, dtype: str | None = None) -> int:
    """Bytes of K and V one token takes over all layers."""
    itemsize = jnp.dtype(dtype or model_cfg.dtype).itemsize
    return 2 * model_cfg.num_layers * model_cfg.num_kv_heads * model_cfg.head_dim * itemsize


class EngineState(NamedTuple):
    """Device state of every slot (a pytree, donated through each jitted call)."""

    cache: LayerCache  # page pools k, v: [L, P, page, K, H], pages split over batch shards
    # [S, pages_per_slot] page ids local to the slot's shard; unassigned entries hold
    # P / shards (the number of pages of a shard)
    page_table: jax.Array
    limit: jax.Array  # [S] tokens the slot's pages can hold (at most the capacity)
    lengths: jax.Array  # [S] tokens whose K/V are in the cache
    pending: jax.Array  # [S] the next token to feed
    active: jax.Array  # [S] decoding in this turn
    budget: jax.Array  # [S] tokens it may still sample this turn
    key: jax.Array


def _replicated(mesh: Mesh | None) -> jax.sharding.Sharding:
    if mesh is None:
        return SingleDeviceSharding(jax.devices()[0])
    return NamedSharding(mesh, PartitionSpec())


def _pool_shape(model_cfg, config: EngineConfig) -> tuple[int, ...]:
    c, m = config, model_cfg
    return (m.num_layers, c.pool_pages, c.page_size, m.num_kv_heads, m.head_dim)


def state_shardings(model_cfg, config: EngineConfig, mesh: Mesh | None) -> EngineState:
    """Where each part of an engine's state lives: the pools' pages split like the slots
    (`kv_cache.pool_page_axes`) and KV heads over tensor, the bookkeeping replicated."""
    rep = _replicated(mesh)
    pool, page_axes = rep, pool_page_axes(mesh, config.num_slots)
    if mesh is not None:
        pool = NamedSharding(mesh, pool_spec(mesh, page_axes, model_cfg.num_kv_heads))
    return EngineState(LayerCache(pool, pool, page_axes), rep, rep, rep, rep, rep, rep, rep)


def abstract_state(model_cfg, config: EngineConfig, mesh: Mesh) -> EngineState:
    """An engine's state as ShapeDtypeStructs at its shardings: for compiling the decode
    program ahead of time (`swejax.memory_plan`), nothing allocated."""
    shardings = state_shardings(model_cfg, config, mesh)
    slots, dtype = config.num_slots, jnp.dtype(model_cfg.dtype)

    def struct(shape, dt, sharding):
        return jax.ShapeDtypeStruct(shape, dt, sharding=sharding)

    pool = struct(_pool_shape(model_cfg, config), dtype, shardings.cache.k)
    rows = (
        struct((slots,), dt, sharding)
        for dt, sharding in zip(
            (jnp.int32, jnp.int32, jnp.int32, bool, jnp.int32),
            shardings[2:7],
            strict=True,
        )
    )
    table = struct((slots, config.pages_per_slot), jnp.int32, shardings.page_table)
    key = jax.eval_shape(lambda: jax.random.key(0))
    return EngineState(
        LayerCache(pool, pool, shardings.cache.page_axes),
        table,
        *rows,
        struct(key.shape, key.dtype, shardings.key),
    )


def decode_program(model_cfg, config: EngineConfig, mesh: Mesh | None):
    """The engine's jitted decode. Arguments: graphdef, visible pages, steps, sampling, stop
    tokens, split_layers (static), then params, state (donated) and capacity. The state comes
    back at its own shardings, so no call sees a new layout and recompiles."""
    out = (state_shardings(model_cfg, config, mesh), (_replicated(mesh),) * 4)
    return jax.jit(_decode, static_argnums=(0, 1, 2, 3, 4, 5), donate_argnums=7, out_shardings=out)


@dataclasses.dataclass(frozen=True)
class DecodeResult:
    """What one `decode` call produced, per slot (host numpy)."""

    tokens: list[np.ndarray]  # new tokens of each slot (empty for idle slots)
    logprobs: list[np.ndarray]  # their log-probabilities under the sampled distribution
    stopped: np.ndarray  # [S] bool: the slot ended its turn during this call
    reasons: np.ndarray  # [S] StopReason of the slots that stopped


def _ingest(graphdef, visible_pages: int, params, state: EngineState, slots, tokens, counts):
    """Write K/V of tokens[r, :counts[r]] after the cached tokens of slots[r], for every row r.

    Rows with count 0 are padding (their slot may repeat a real row's): nothing of theirs is
    written and their slot's length is unchanged.
    """
    model = nnx.merge(graphdef, params)
    index = jnp.arange(tokens.shape[1])[None, :]
    starts = state.lengths[slots][:, None]
    beyond = visible_pages * state.cache.k.shape[2]
    positions = jnp.where(index < counts[:, None], starts + index, beyond)
    pages = state.page_table[slots][:, :visible_pages]
    _, cache = model.hidden_states_cached(tokens, positions, state.cache, pages)
    return state._replace(cache=cache, lengths=state.lengths.at[slots].add(counts))


def _decode(
    graphdef,
    visible_pages: int,
    num_steps: int,
    sampling: SamplingParams,
    stop_tokens: tuple[int, ...],
    split_layers: bool,
    params,
    state: EngineState,
    capacity,
):
    """Up to `num_steps` steps for every active slot; stops early once no slot is active."""
    model = nnx.merge(graphdef, params)
    num_slots = state.lengths.shape[0]
    beyond = visible_pages * state.cache.k.shape[2]
    stops = jnp.asarray(stop_tokens, jnp.int32).reshape(-1)
    pages = state.page_table[:, :visible_pages]
    layer_weights = model.split_layer_weights() if split_layers else None

    def step(carry):
        i, state, tokens_out, logprobs_out, emitted, reasons = carry
        positions = jnp.where(state.active, state.lengths, beyond)[:, None]
        hidden, cache = model.hidden_states_cached(
            state.pending[:, None], positions, state.cache, pages, layer_weights
        )
        key, subkey = jax.random.split(state.key)
        new_tokens, logprobs = sample(model.logits(hidden)[:, 0], subkey, sampling)
        active = state.active
        lengths = state.lengths + active
        budget = state.budget - active
        # The sequence is the cached tokens plus the new pending one, which needs a row next.
        reason = jnp.select(
            [
                jnp.isin(new_tokens, stops),
                budget <= 0,
                lengths + 1 >= capacity,
                lengths + 1 > state.limit,
            ],
            [
                StopReason.STOP_TOKEN,
                StopReason.BUDGET,
                StopReason.CONTEXT_FULL,
                StopReason.OUT_OF_PAGES,
            ],
            StopReason.RUNNING,
        )
        ended = active & (reason != StopReason.RUNNING)
        state = state._replace(
            cache=cache,
            lengths=lengths,
            pending=jnp.where(active, new_tokens, state.pending),
            active=active & ~ended,
            budget=budget,
            key=key,
        )
        tokens_out = tokens_out.at[:, i].set(new_tokens)
        logprobs_out = logprobs_out.at[:, i].set(logprobs)
        emitted = emitted.at[:, i].set(active)
        reasons = jnp.where(ended, reason, reasons)
        return i + 1, state, tokens_out, logprobs_out, emitted, reasons

    def keep_going(carry):
        return (carry[0] < num_steps) & jnp.any(carry[1].active)

    init = (
        jnp.int32(0),
        state,
        jnp.zeros((num_slots, num_steps), jnp.int32),
        jnp.zeros((num_slots, num_steps), jnp.float32),
        jnp.zeros((num_slots, num_steps), bool),
        jnp.zeros((num_slots,), jnp.int32),
    )
    _, state, tokens, logprobs, emitted, reasons = jax.lax.while_loop(keep_going, step, init)
    return state, (tokens, logprobs, emitted, reasons)


def _set_slot(state: EngineState, slot, pages, limit, length, pending, active, budget):
    """Overwrite one slot's bookkeeping (its K/V pages are untouched)."""
    return state._replace(
        page_table=state.page_table.at[slot].set(pages),
        limit=state.limit.at[slot].set(limit),
        lengths=state.lengths.at[slot].set(length),
        pending=state.pending.at[slot].set(pending),
        active=state.active.at[slot].set(active),
        budget=state.budget.at[slot].set(budget),
    )


@dataclasses.dataclass
class _Slot:
    """The host's copy of one slot's bookkeeping (the device state is never read back)."""

    pages: list[int] = dataclasses.field(default_factory=list)
    cached: int = 0  # tokens whose K/V are in the cache
    pending: int | None = None
    active: bool = False
    budget: int = 0

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
        self._page_axes = pool_page_axes(mesh, config.num_slots)
        self._shards = num_shards(mesh, self._page_axes)
        if config.pool_pages % self._shards:
            raise ValueError(
                f"EngineConfig.num_pages={config.pool_pages} must be a multiple of the "
                f"{self._shards} batch shards the slots are split over {self._page_axes}: "
                "each shard owns an equal part of the pool"
            )
        self._shard_pages = config.pool_pages // self._shards
        self._shard_slots = config.num_slots // self._shards
        shardings = self._shardings = state_shardings(model.cfg, config, mesh)
        # Fixed output shardings: every call hands the state back laid out exactly as it came,
        # so no call sees a new input layout and recompiles. Host values go in as numpy: a jax
        # array made inside the mesh context would carry a different sharding than one made
        # outside, and each sharding is its own compiled program.
        self._ingest = jax.jit(
            _ingest, static_argnums=(0, 1), donate_argnums=3, out_shardings=shardings
        )
        self._decode = decode_program(model.cfg, config, mesh)
        self._set_slot = jax.jit(_set_slot, donate_argnums=0, out_shardings=shardings)
        self.reset()

    # --- layout ---------------------------------------------------------------------------

    def _new_state(self) -> EngineState:
        shape, dtype = _pool_shape(self.model.cfg, self.config), jnp.dtype(self.model.cfg.dtype)
        slots, cfg = self.config.num_slots, self.config

        def init() -> EngineState:
            zeros = jnp.zeros((slots,), jnp.int32)
            return EngineState(
                cache=LayerCache(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype), self._page_axes),
                page_table=jnp.full((slots, cfg.pages_per_slot), self._shard_pages, jnp.int32),
                limit=zeros,
                lengths=zeros,
                pending=zeros,
                active=jnp.zeros((slots,), bool),
                budget=zeros,
                key=jax.random.key(self._seed),
            )

        return jax.jit(init, out_shardings=self._shardings)()

    def reseed(self, seed: int) -> None:
        """Draw from a new random stream from now on (the engine must be idle). After
        `release`, this allocates the pools again, every slot empty."""
        if any(s.active for s in self._slots):
            raise RuntimeError("reseed needs an idle engine")
        self._seed = seed
        if self.state is None:
            self.reset()
            return
        key = jax.device_put(jax.random.key(seed), _replicated(self.mesh))
        self.state = self.state._replace(key=key)

    # --- slots ----------------------------------------------------------------------------

    def reset(self) -> None:
        """Every slot empty and every page free (the pools are reallocated)."""
        self.state = self._new_state()
        self._slots = [_Slot() for _ in range(self.config.num_slots)]
        # One free list per batch shard, of its own pages' global ids (popped from the end).
        n = self._shard_pages
        self._free_pages = [
            list(range((g + 1) * n - 1, g * n - 1, -1)) for g in range(self._shards)
        ]

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
        self._free_pages[self._shard(slot)] += reversed(self._slots[slot].pages)
        self._slots[slot] = _Slot()
        self._push(slot)

    def length(self, slot: int) -> int:
        """Tokens in the slot's sequence so far, the pending one included."""
        return self._slots[slot].length

    def free_pages(self) -> int:
        """Free pages over all batch shards."""
        return sum(len(free) for free in self._free_pages)

    def _shard(self, slot: int) -> int:
        """The batch shard that holds the slot (and the pages it may use)."""
        return slot // self._shard_slots

    def _reserve(self, slot: int, tokens: int) -> bool:
        """Give the slot pages of its shard for `tokens` tokens in all; False if they run dry."""
        pages, free = self._slots[slot].pages, self._free_pages[self._shard(slot)]
        needed = math.ceil(min(tokens, self.config.capacity) / self.config.page_size)
        while len(pages) < needed and free:
            pages.append(free.pop())
        return len(pages) >= needed

    def _push(self, slot: int) -> None:
        """Send the host's bookkeeping of one slot to the device."""
        s, cfg = self._slots[slot], self.config
        row = np.full(cfg.pages_per_slot, self._shard_pages, np.int32)
        row[: len(s.pages)] = np.asarray(s.pages, np.int32) - self._shard(slot) * self._shard_pages
        limit = min(cfg.capacity, len(s.pages) * cfg.page_size)
        with activation_mesh(self.mesh):
            self.state = self._set_slot(
                self.state,
                np.int32(slot),
                row,
                np.int32(limit),
                np.int32(s.cached),
                np.int32(s.pending or 0),
                np.bool_(s.active),
                np.int32(s.budget),
            )

    def _bucket(self, pages: int) -> int:
        """The number of pages a call attends over: a power of two, at most pages_per_slot."""
        return min(self.config.pages_per_slot, 1 << max(0, pages - 1).bit_length())

    @property
    def _shard_rows(self) -> int:
        """Rows of each batch shard in an ingest call (`ingest_rows` over all of them, rounded
        up to a multiple of the shards)."""
        return math.ceil(min(self.config.ingest_rows, self.config.num_slots) / self._shards)

    def _ingest_groups(self, rows: list[tuple[int, list[int]]]) -> list[list]:
        """(slot, tokens) rows cut into ingest calls of at most `_shard_rows` rows per shard."""
        per = self._shard_rows
        by_shard = [[row for row in rows if self._shard(row[0]) == g] for g in range(self._shards)]
        calls = max(math.ceil(len(part) / per) for part in by_shard)
        return [
            [row for part in by_shard for row in part[c * per : (c + 1) * per]]
            for c in range(calls)
        ]

    def _run_ingest(self, visible: int, rows: list[tuple[int, list[int]]]) -> None:
        """One ingest call over (slot, tokens) rows, at most `_shard_rows` of each shard, padded
        to full shape: shard g's rows fill block g of the call's rows, as the page pool's
        shards expect. Padding rows name a slot of their block's shard and feed nothing."""
        per = self._shard_rows
        slots = np.repeat(np.arange(self._shards, dtype=np.int32) * self._shard_slots, per)
        tokens = np.zeros((per * self._shards, self.config.chunk), np.int32)
        counts = np.zeros(per * self._shards, np.int32)
        used = [0] * self._shards
        for slot, part in rows:
            g = self._shard(slot)
            r = g * per + used[g]
            used[g] += 1
            slots[r], counts[r] = slot, len(part)
            tokens[r, : len(part)] = part
        with activation_mesh(self.mesh):
            self.state = self._ingest(
                self._graphdef, visible, nnx.state(self.model), self.state, slots, tokens, counts
            )

    def _run_decode(self, visible: int, num_steps: int):
        with activation_mesh(self.mesh):
            self.state, out = self._decode(
                self._graphdef,
                visible,
                num_steps,
                self.sampling,
                self.config.stop_tokens,
                self.config.split_layer_weights,
                nnx.state(self.model),
                self.state,
                np.int32(self.config.capacity),
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

    def prefill(self, slot: int, tokens: Sequence[int]) -> None:
        """Start a new sequence in `slot` with `tokens` (a prompt)."""
        self.prefill_many([(slot, tokens)])

    def prefill_many(self, requests: Sequence[tuple[int, Sequence[int]]]) -> None:
        """Start new sequences in several slots, fed together (`ingest_rows` per call)."""
        for slot, _ in requests:
            self.free(slot)
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
            if not self._reserve(slot, s.length + len(tokens)):
                raise ContextFull(f"the KV page pool has no free page left for slot {slot}")
            sequence = ([] if s.pending is None else [s.pending]) + tokens
            to_ingest, s.pending = sequence[:-1], sequence[-1]
            self._push(slot)  # the new pages, before the tokens that use them
            queue.append((slot, to_ingest))
        chunk, offset = self.config.chunk, 0
        while True:
            rows = [
                (slot, ids[offset : offset + chunk]) for slot, ids in queue if len(ids) > offset
            ]
            if not rows:
                break
            for group in self._ingest_groups(rows):
                visible = self._bucket(max(len(self._slots[slot].pages) for slot, _ in group))
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
            before = len(self._slots[slot].pages)
            self._reserve(slot, self._slots[slot].length + num_steps)
            if len(self._slots[slot].pages) != before:
                self._push(slot)
        visible = self._bucket(max((len(self._slots[i].pages) for i in active), default=1))
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
