"""The generation engine: slots over a paged KV cache, fed by prefill / extend, advanced by decode.

A slot holds one sequence. Its state is the tokens whose keys and values are in the cache
(`length` of them) and one pending token: the last token given or sampled, whose K/V are
computed when it is fed at the next decode step or extend. So each token runs through the model
exactly once over a whole multi-turn episode (linear prefill), and no logits are kept between
calls.

A repetition penalty (evaluation with a checkpoint's own decoding) needs, per slot, which
tokens its sequence holds: the host keeps that presence mask [S, V] beside the slots' other
bookkeeping (a token is marked when it is fed, prompt and observations alike, or sampled; a
freed slot's row is cleared) and sends it with each decode call, whose steps add the tokens
they sample. The default sampler has no mask: nothing is kept, sent or carried.

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

The device work is two jitted programs (`swejax.sampling._programs`) over one donated state
(`swejax.sampling._state`), each with fixed shapes per page bucket and fixed output shardings:
the cache is updated in place and nothing recompiles once each bucket has been seen. The
slots' bookkeeping lives on the host and goes in with each call. The model's parameters are
read from the model at each call, so the engine samples from whatever weights the trainer has
just written (one copy of the weights).

Many processes (JAX multi-controller): the slots of a batch shard belong to the process whose
devices hold it (`local_slots`), and only that process feeds, starts or frees them. Every
process makes the same device calls in the same order with the same shapes, each filling in
its own slots' rows and reading back only its own: `extend_many`, `decode` and `warm_up` are
collective (every process calls them, with nothing to do if so), and agree on their page
buckets and number of ingest calls through a small all-gather. With one process that
exchange is nothing.
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
from swejax.sampling._processes import agreed_buckets, local_slots
from swejax.sampling._programs import (
    DecodeProgram,
    IngestProgram,
    StopReason,
    jit_decode,
    jit_ingest,
)
from swejax.sampling._state import (
    TABLE_DTYPES,
    SlotTable,
    new_key,
    new_state,
    page_shards,
    row_sharding,
    state_shardings,
)
from swejax.sampling._strategies import SamplingParams
from swejax.sampling._streams import stream_words
from swejax.sharding import activation_mesh


class ContextFull(Exception):
    """A slot was given more tokens than it (or the page pool) can hold; the episode must end."""


@dataclasses.dataclass(frozen=True)
class DecodeResult:
    """What one `decode` call produced, per slot (host numpy)."""

    tokens: list[np.ndarray]  # new tokens of each slot (empty for idle and other processes')
    logprobs: list[np.ndarray]  # their log-probabilities under the sampled distribution
    stopped: np.ndarray  # [S] bool: the slot ended its turn during this call
    reasons: np.ndarray  # [S] StopReason of the slots that stopped


@dataclasses.dataclass
class _Slot:
    """One slot's bookkeeping, kept on the host and sent with each call; its pages are the
    allocator's."""

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
        self._rows = row_sharding(mesh, config)
        self.local_slots = local_slots(self._rows, config.num_slots)
        self._local_set = frozenset(self.local_slots)
        # Fixed output shardings: every call hands the state back laid out exactly as it came,
        # so no call sees a new input layout and recompiles. Host values go in as arrays at
        # the rows' sharding, each process making the shards of its own slots.
        self._ingest = jit_ingest(shardings)
        self._decode = jit_decode(shardings, self._rows)
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
        self.state = self.state._replace(key=new_key(seed, self.mesh))

    # --- slots ----------------------------------------------------------------------------

    def reset(self) -> None:
        """Every slot empty and every page free (the pools are reallocated)."""
        self.state = new_state(self.model.cfg, self.config, self.mesh, self._seed)
        self._slots = [_Slot() for _ in range(self.config.num_slots)]
        self._seen = self._nothing_seen()
        self._pages.reset()

    def release(self) -> None:
        """Give the KV page pools' device memory back (between rollouts, so the train step has
        it); the compiled programs stay. `reset` or `reseed` allocates the pools again."""
        if self.state is not None:
            for pool in self.state.cache:
                pool.delete()
        self.state = None
        self._slots = [_Slot() for _ in range(self.config.num_slots)]
        self._seen = self._nothing_seen()

    def free(self, slot: int) -> None:
        """End a slot's sequence and return its pages; their stale contents are never read."""
        self._check_slot(slot)
        self._pages.free(slot)
        self._slots[slot] = _Slot()
        if self._seen is not None:
            self._seen[slot] = False

    def _nothing_seen(self) -> np.ndarray | None:
        """The presence mask of empty slots ([S, V] bool, all False), or None when the sampler
        has no repetition penalty (then no mask exists at all)."""
        if not self.sampling.penalizes_repetition:
            return None
        return np.zeros((self.config.num_slots, self.model.cfg.vocab_size), np.bool_)

    def _mark_seen(self, slot: int, tokens: Sequence[int] | np.ndarray) -> None:
        """Record that `tokens` are now in the slot's sequence (with a repetition penalty)."""
        if self._seen is not None:
            self._seen[slot, np.asarray(tokens, np.int64)] = True

    def length(self, slot: int) -> int:
        """Tokens in the slot's sequence so far, the pending one included."""
        return self._slots[slot].length

    def free_pages(self) -> int:
        """Free pages over all batch shards."""
        return self._pages.free_pages()

    def _global(self, host: np.ndarray) -> jax.Array:
        """A per-slot host array ([S, ...] or ingest rows) at the rows' sharding; each process
        makes only the shards on its devices, from its own rows of `host`."""
        return jax.make_array_from_callback(host.shape, self._rows, lambda index: host[index])

    def _local(self, array: jax.Array) -> np.ndarray:
        """A per-slot device array read back into a host array of its global shape: the rows
        of this process's shards filled, the rest zero."""
        out = np.zeros(array.shape, array.dtype)
        for shard in array.addressable_shards:
            out[shard.index] = np.asarray(shard.data)
        return out

    def _table(self, visible: int) -> SlotTable:
        """The slot table of every slot, for a call attending over `visible` pages (other
        processes' slots are filled in by their own processes)."""
        slots, cfg = self._slots, self.config
        host = SlotTable(
            np.stack([self._pages.table_row(i)[:visible] for i in range(cfg.num_slots)]),
            np.array(
                [
                    min(cfg.capacity, self._pages.page_count(i) * cfg.page_size)
                    for i in range(cfg.num_slots)
                ]
            ),
            np.array([s.cached for s in slots]),
            np.array([s.pending or 0 for s in slots]),
            np.array([s.active for s in slots]),
            np.array([s.budget for s in slots]),
            np.stack([stream_words(s.stream) for s in slots]),
        )
        return SlotTable(
            *(self._global(x.astype(dt)) for x, dt in zip(host, TABLE_DTYPES, strict=True))
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
        shards expect. Padding rows feed nothing."""
        per, shards = self._shard_rows, self._pages.num_shards
        tokens = np.zeros((per * shards, self.config.ingest_chunk), np.int32)
        counts = np.zeros(per * shards, np.int32)
        starts = np.zeros(per * shards, np.int32)
        pages = np.full((per * shards, visible), self._pages.unassigned, np.int32)
        used = [0] * shards
        for slot, part in rows:
            g = self._pages.shard(slot)
            r = g * per + used[g]
            used[g] += 1
            counts[r], starts[r] = len(part), self._slots[slot].cached
            tokens[r, : len(part)] = part
            pages[r] = self._pages.table_row(slot)[:visible]
        program = IngestProgram(self._graphdef, visible_pages=visible)
        arrays = (self._global(x) for x in (tokens, counts, starts, pages))
        with activation_mesh(self.mesh):
            self.state = self._ingest(program, nnx.state(self.model), self.state, *arrays)

    def decode_arguments(self, visible: int) -> tuple:
        """The decode program's arguments after the program: params, state, the slot table
        for `visible` pages, the capacity and the presence mask (None without a repetition
        penalty), for lowering it, as the tests and tools do."""
        table = self._table(visible)
        seen = None if self._seen is None else self._global(self._seen)
        return nnx.state(self.model), self.state, table, np.int32(self.config.capacity), seen

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
            self.state, out = self._decode(program, *self.decode_arguments(visible))
        return out

    def warm_up(self) -> None:
        """Compile ingest and decode for every page bucket now, not in the middle of a rollout.

        Each program runs once with nothing to do (no tokens, no active slot), so the state is
        unchanged.
        """
        if any(s.active or s.pending is not None for s in self._slots):
            raise RuntimeError("warm_up must run on an empty engine")
        buckets = sorted({self._bucket(n) for n in range(1, self.config.pages_per_slot + 1)})
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
        """Append tokens to several slots; all are checked before any is changed. Collective
        (as is `prefill_many`): every process calls it, with its own slots' requests or none."""
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
        for slot, tokens in requests:
            if not self._pages.reserve(slot, self._slots[slot].length + len(tokens)):
                raise ContextFull(f"the KV page pool has no free page left for slot {slot}")
        self._ingest_requests(requests)

    def feed(
        self,
        starts: Sequence[tuple[int, Sequence[int], int]],
        extends: Sequence[tuple[int, Sequence[int]]],
    ) -> set[int]:
        """Start sequences (slot, prompt, stream) and extend others (slot, tokens), all in one
        set of ingest calls. Unlike `extend_many`, a request that does not fit (the slot's
        capacity, or its shard's pages) is refused on its own: the slots refused come back,
        and a refused start leaves its slot empty. Collective, like `extend_many`."""
        for slot, _, stream in starts:
            self.free(slot)
            self._slots[slot].stream = stream
        requests = [(slot, [int(t) for t in ids]) for slot, ids, _ in starts]
        requests += [(slot, [int(t) for t in ids]) for slot, ids in extends]
        if len({slot for slot, _ in requests}) != len(requests):
            raise ValueError("feed got the same slot twice")
        accepted, refused = [], set()
        for slot, tokens in requests:
            self._check_slot(slot)
            total = self._slots[slot].length + len(tokens)
            if total > self.config.capacity or not self._pages.reserve(slot, total):
                refused.add(slot)
            elif tokens:
                accepted.append((slot, tokens))
        for slot, _, _ in starts:
            if slot in refused:
                self.free(slot)
        self._ingest_requests(accepted)
        return refused

    def _ingest_requests(self, requests: list[tuple[int, list[int]]]) -> None:
        """Feed checked requests whose pages are reserved: each slot's sequence so far plus its
        tokens, all but the last ingested (the last is pending)."""
        queue = []
        for slot, tokens in requests:
            self._mark_seen(slot, tokens)  # the pending one too: the next step reads it
            s = self._slots[slot]
            sequence = ([] if s.pending is None else [s.pending]) + tokens
            to_ingest, s.pending = sequence[:-1], sequence[-1]
            queue.append((slot, to_ingest))
        calls = self._ingest_calls(queue)
        buckets = agreed_buckets([self._bucket(held) for _, held in calls])
        for c, visible in enumerate(buckets):
            group = calls[c][0] if c < len(calls) else []  # another process's call
            self._run_ingest(visible, group)
            for slot, part in group:
                self._slots[slot].cached += len(part)

    def _ingest_calls(self, queue: list[tuple[int, list[int]]]) -> list[tuple[list, int]]:
        """The ingest calls that feed `queue`'s (slot, ids), `ingest_chunk` tokens of each slot
        at a time: (rows, the most pages a row's slot holds) per call."""
        chunk, offset, calls = self.config.ingest_chunk, 0, []
        while True:
            rows = [
                (slot, ids[offset : offset + chunk]) for slot, ids in queue if len(ids) > offset
            ]
            if not rows:
                return calls
            for group in self._ingest_groups(rows):
                calls.append((group, max(self._pages.page_count(slot) for slot, _ in group)))
            offset += chunk

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

    def decode(self, num_steps: int | None = None) -> DecodeResult:
        """Run up to `num_steps` (default: config.steps_per_call) steps for every active slot.
        Collective: every process calls it (`num_steps` alike), each reading back its own
        slots."""
        num_steps = num_steps or self.config.steps_per_call
        if self.state is None:
            raise RuntimeError("the engine's KV cache was released; reset() or reseed() first")
        active = [i for i, s in enumerate(self._slots) if s.active]
        for slot in active:
            # Pages for this call's tokens; a slot the pool cannot serve stops OUT_OF_PAGES.
            self._pages.reserve(slot, self._slots[slot].length + num_steps)
        held = (self._pages.page_count(i) for i in active)
        (visible,) = agreed_buckets([self._bucket(max(held, default=1))])
        out = self._run_decode(visible, num_steps)
        tokens, logprobs, emitted, reasons = (self._local(x) for x in out)
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
                self._mark_seen(slot, tokens[slot][mask])
                s.budget -= int(mask.sum())
                stopped[slot] = reasons[slot] != StopReason.RUNNING
                s.active = not stopped[slot]
        return DecodeResult(result_tokens, result_logprobs, stopped, reasons)

    def _check_slot(self, slot: int) -> None:
        if self.state is None:
            raise RuntimeError("the engine's KV cache was released; reset() or reseed() first")
        if not 0 <= slot < self.config.num_slots:
            raise IndexError(f"slot {slot} out of range [0, {self.config.num_slots})")
        if slot not in self._local_set:
            raise IndexError(
                f"slot {slot} belongs to another process (this one's: {self.local_slots})"
            )
