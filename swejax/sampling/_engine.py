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

More slots than the pool holds at once may be live: when a call needs pages its shard lacks,
other sequences of the shard are preempted (`swejax.sampling._admission` says which): their
pages are copied to host memory and given back, and copied into new pages, bit for bit, when
the sequence is needed again. A preempted sequence's turn waits; its tokens are the ones it
draws without preemption (draws are keyed by position, and its keys and values come back
unchanged). Only the real context limit (`capacity`) ends a sequence, and the pool must hold one
whole sequence per shard (checked at start). `preemption` counts what moved.

A repetition penalty (evaluation with a checkpoint's own decoding) needs, per slot, which
tokens its sequence holds: the host keeps that presence mask [S, V] (a token is marked when it
is fed or sampled; a freed slot's row is cleared) and sends it with each decode call, whose
steps add the tokens they sample. The default sampler has no mask.

On a mesh the slots are split over the batch axes (data, fsdp: those that divide the slots), and
so are the pages: each batch shard owns an equal part of the pool and a free list of its own,
and gives its slots only its own pages, so a device holds its slots' K/V and no one else's.

The device work (`swejax.sampling._calls`) is jitted programs over one donated state
(`swejax.sampling._state`), each with fixed shapes per page bucket and fixed output shardings:
the cache is updated in place and nothing recompiles once each bucket has been seen. The
weights are the model's own, read at each call (the trainer's latest), unless `use_weights`
gave a copy laid out for decoding (`swejax.sampling._layout`).

Many processes: an engine on one process's devices (the rollout layout) is that process's
alone. An engine over a mesh spanning processes (decoding over the training layout) is
collective: the slots of a batch shard belong to the process whose devices hold it
(`local_slots`), and every process makes the same device calls in the same order with the same
shapes, each filling in its own slots' rows: `extend_many`, `feed`, `decode` and `warm_up` are
then called by every process, with nothing to do if so.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from swejax.config import EngineConfig
from swejax.models.kv_cache import pool_page_axes
from swejax.models.qwen2 import Qwen2
from swejax.sampling._admission import Preemption, Residency, Slot
from swejax.sampling._calls import DeviceCalls
from swejax.sampling._pages import PageAllocator
from swejax.sampling._processes import local_slots
from swejax.sampling._programs import DecodeProgram, StopReason
from swejax.sampling._state import (
    new_key,
    new_state,
    page_shards,
    row_sharding,
    state_shardings,
)
from swejax.sampling._strategies import SamplingParams


class ContextFull(Exception):
    """A slot was given more tokens than it (or the page pool) can hold; the episode must end."""


@dataclasses.dataclass(frozen=True)
class DecodeResult:
    """What one `decode` call produced, per slot (host numpy)."""

    tokens: list[np.ndarray]  # new tokens of each slot (empty for idle and other processes')
    logprobs: list[np.ndarray]  # their log-probabilities under the sampled distribution
    stopped: np.ndarray  # [S] bool: the slot ended its turn during this call
    reasons: np.ndarray  # [S] StopReason of the slots that stopped


@dataclasses.dataclass(frozen=True)
class Fed:
    """What `feed` did with its requests: slots `refused` (the tokens exceed the slot's
    capacity: the episode's context is full) and slots `deferred` (no room in the pool now:
    feed them again later); the rest were fed."""

    refused: frozenset[int]
    deferred: frozenset[int]


class Engine:
    """Slots over one paged KV cache on `mesh`; see the module docstring."""

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
        self._weights: nnx.State | None = None
        if not config.num_slots:
            raise ValueError(
                "EngineConfig.num_slots=0 means 'as many as fit': size it first "
                "(swejax.builder.engine_config_of)"
            )
        shards = page_shards(config, mesh)
        if config.pool_pages % shards:
            raise ValueError(
                f"EngineConfig.num_pages={config.pool_pages} must be a multiple of the "
                f"{shards} batch shards the slots are split over "
                f"{pool_page_axes(mesh, config.num_slots)}: each shard owns an equal part of "
                "the pool"
            )
        if config.pool_pages // shards < config.pages_per_slot:
            raise ValueError(
                f"EngineConfig.num_pages={config.pool_pages} gives each of the {shards} batch "
                f"shards {config.pool_pages // shards} pages of {config.page_size} tokens, "
                f"fewer than one sequence of capacity {config.capacity} needs "
                f"({config.pages_per_slot}): raise num_pages or lower the capacity"
            )
        self._pages = PageAllocator(
            config.num_slots, config.pool_pages, shards, config.page_size, config.pages_per_slot
        )
        shardings = state_shardings(model.cfg, config, mesh)
        rows = row_sharding(mesh, config)
        self.collective = mesh is not None and any(
            d.process_index != jax.process_index() for d in mesh.devices.flat
        )
        self._calls = DeviceCalls(
            config, mesh, self._pages, shardings, rows, self.collective, model.cfg
        )
        self.local_slots = local_slots(rows, config.num_slots)
        self._local_set = frozenset(self.local_slots)
        self._residency = Residency(self._pages, self._calls, self._local_set, self.collective)
        self._warm = False
        self.reset()

    # --- weights and layout -----------------------------------------------------------------

    def use_weights(self, params: nnx.State | None) -> None:
        """Decode from `params` (a State shaped like the model's, on this engine's mesh: the
        rollout layout's copy), or from the model's own weights again (None)."""
        self._weights = params

    @property
    def _params(self) -> nnx.State:
        return nnx.state(self.model) if self._weights is None else self._weights

    def reseed(self, seed: int) -> None:
        """Draw from a new random stream from now on (the engine must be idle). After
        `release`, this allocates the pools again, every slot empty."""
        if any(s.active for s in self._slots):
            raise RuntimeError("reseed needs an idle engine")
        self._seed = seed
        self._residency.stats = Preemption()
        if self.state is None:
            self.reset()
            return
        self.state = self.state._replace(key=new_key(seed, self.mesh))

    # --- slots ----------------------------------------------------------------------------

    def reset(self) -> None:
        """Every slot empty and every page free (the pools are reallocated)."""
        self.state = new_state(self.model.cfg, self.config, self.mesh, self._seed)
        self._empty_slots()
        self._pages.reset()

    def release(self) -> None:
        """Give the KV page pools' device memory back (between rollouts, so the train step has
        it); the compiled programs stay. `reset` or `reseed` allocates the pools again."""
        if self.state is not None:
            for pool in self.state.cache:
                pool.delete()
        self.state = None
        self._empty_slots()

    def _empty_slots(self) -> None:
        self._slots = [Slot() for _ in range(self.config.num_slots)]
        self._seen = self._nothing_seen()
        self._clock = self._started = 0
        self._residency.stats = Preemption()

    def free(self, slot: int) -> None:
        """End a slot's sequence and return its pages; their stale contents are never read."""
        self._check_slot(slot)
        self._pages.free(slot)
        self._slots[slot] = Slot()
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

    @property
    def preemption(self) -> Preemption:
        """What preemption moved since the engine was reset or reseeded."""
        return self._residency.stats

    def resident(self, slot: int) -> bool:
        """Whether the slot's keys and values are in the pool (not swapped out)."""
        return self._slots[slot].swapped is None

    # --- pages and preemption ---------------------------------------------------------------

    def _make_room(self, needs: dict[int, tuple[int, bool]]) -> set[int]:
        """Give each slot of `needs` (slot -> (tokens it must hold, may it preempt others))
        its pages, preempting others as the policy says; the slots that got them."""
        self.state, granted = self._residency.make_room(self.state, self._slots, needs)
        return granted

    def preempt(self, slot: int) -> None:
        """Move the slot's keys and values to host memory now and give its pages back; the
        sequence comes back by itself when it is fed or decoded again (or by `restore`).
        Collective on a collective engine."""
        self._check_slot(slot)
        self._residency.swap_out(self.state, self._slots, [slot])

    def restore(self, slot: int) -> bool:
        """Bring a preempted sequence back into the pool now if its shard has free pages for
        it (preempting nobody); whether it is resident. Collective on a collective engine."""
        self._check_slot(slot)
        return slot in self._make_room({slot: (self._slots[slot].length, False)})

    # --- compiling ----------------------------------------------------------------------------

    def _bucket(self, pages: int) -> int:
        """The number of pages a call attends over: a power of two, at most pages_per_slot."""
        return min(self.config.pages_per_slot, 1 << max(0, pages - 1).bit_length())

    def warm_up(self) -> None:
        """Compile ingest and decode for every page bucket now, not in the middle of a rollout
        (once: later calls do nothing). Each program runs once with nothing to do (no tokens,
        no active slot), so the state is unchanged."""
        if self._warm:
            return
        if any(s.active or s.pending is not None for s in self._slots):
            raise RuntimeError("warm_up must run on an empty engine")
        buckets = sorted({self._bucket(n) for n in range(1, self.config.pages_per_slot + 1)})
        for visible in buckets:
            self._ingest(visible, [])
            self._run_decode(visible, self.config.steps_per_call, set())
        self._warm = True

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
            self._start(slot, slot if streams is None else streams[i])
        self.extend_many(requests)

    def _start(self, slot: int, stream: int) -> None:
        self.free(slot)
        self._started += 1
        self._slots[slot].stream, self._slots[slot].age = stream, self._started

    def extend(self, slot: int, tokens: Sequence[int]) -> None:
        """Append `tokens` (an observation, say) after everything the slot already holds."""
        self.extend_many([(slot, tokens)])

    def extend_many(self, requests: Sequence[tuple[int, Sequence[int]]]) -> None:
        """Append tokens to several slots; all are checked before any is changed, and a
        request the pool cannot take now is an error (`feed` defers it instead). Collective
        on a collective engine."""
        requests = self._checked(requests)
        for slot, tokens in requests:
            total = self._slots[slot].length + len(tokens)
            if total > self.config.capacity:
                raise ContextFull(
                    f"slot {slot} holds {self._slots[slot].length} tokens; {len(tokens)} more "
                    f"exceed its capacity of {self.config.capacity}"
                )
        needs = {slot: (self._slots[slot].length + len(t), True) for slot, t in requests}
        missing = sorted(needs.keys() - self._make_room(needs))
        if missing:
            raise ContextFull(f"the KV page pool has no room for slot {missing[0]} now")
        self._ingest_requests(requests)

    def feed(
        self,
        starts: Sequence[tuple[int, Sequence[int], int]],
        extends: Sequence[tuple[int, Sequence[int]]],
    ) -> Fed:
        """Start sequences (slot, prompt, stream) and extend others (slot, tokens), all in one
        set of ingest calls. Unlike `extend_many`, a request that does not fit is set aside on
        its own: refused if it exceeds the slot's capacity, deferred if the pool has no room
        for it now (a new sequence takes free pages only; an extension may preempt). A refused
        or deferred start leaves its slot empty. Collective on a collective engine."""
        for slot, _, stream in starts:
            self._start(slot, stream)
        new = {slot for slot, _, _ in starts}
        requests = self._checked(
            [(slot, ids) for slot, ids, _ in starts] + [(slot, ids) for slot, ids in extends]
        )
        refused = set()
        needs = {}
        for slot, tokens in requests:
            total = self._slots[slot].length + len(tokens)
            if total > self.config.capacity:
                refused.add(slot)
            else:
                needs[slot] = (total, slot not in new)
        granted = self._make_room(needs)
        deferred = needs.keys() - granted
        for slot in (refused | deferred) & new:
            self.free(slot)
        self._ingest_requests([(s, t) for s, t in requests if s in granted and t])
        return Fed(frozenset(refused), frozenset(deferred))

    def _checked(self, requests) -> list[tuple[int, list[int]]]:
        """(slot, tokens) requests as lists of ints, each slot of this process and once."""
        requests = [(slot, [int(t) for t in tokens]) for slot, tokens in requests]
        if len({slot for slot, _ in requests}) != len(requests):
            raise ValueError("the same slot twice in one call")
        for slot, _ in requests:
            self._check_slot(slot)
        return requests

    def _ingest_requests(self, requests: list[tuple[int, list[int]]]) -> None:
        """Feed checked requests whose pages are held: each slot's sequence so far plus its
        tokens, all but the last ingested (the last is pending)."""
        queue = []
        self._clock += 1
        for slot, tokens in requests:
            if not tokens:
                continue
            self._mark_seen(slot, tokens)  # the pending one too: the next step reads it
            s = self._slots[slot]
            s.last_used = self._clock
            sequence = ([] if s.pending is None else [s.pending]) + tokens
            to_ingest, s.pending = sequence[:-1], sequence[-1]
            queue.append((slot, to_ingest))
        calls = self._calls.ingest_calls(queue)
        buckets = self._calls.buckets([self._bucket(held) for _, held in calls])
        for c, visible in enumerate(buckets):
            group = calls[c][0] if c < len(calls) else []  # another process's call
            self._ingest(visible, group)
            for slot, part in group:
                self._slots[slot].cached += len(part)

    def _ingest(self, visible: int, rows: list[tuple[int, list[int]]]) -> None:
        cached = [s.cached for s in self._slots]
        self.state = self._calls.ingest(
            self.state, self._graphdef, self._params, visible, rows, cached
        )

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
        """Run up to `num_steps` (default: config.steps_per_call) steps for every active slot
        that has (or can be given) the pages for them; an active slot that cannot waits,
        preempted, for a later call. Collective on a collective engine (`num_steps` alike)."""
        num_steps = num_steps or self.config.steps_per_call
        if self.state is None:
            raise RuntimeError("the engine's KV cache was released; reset() or reseed() first")
        slots = self._slots
        active = [i for i, s in enumerate(slots) if s.active]
        running = self._make_room({i: (slots[i].length + num_steps, True) for i in active})
        held = (self._pages.page_count(i) for i in running)
        (visible,) = self._calls.buckets([self._bucket(max(held, default=1))])
        tokens, logprobs, emitted, reasons = (
            self._calls.to_host(x) for x in self._run_decode(visible, num_steps, running)
        )
        self._clock += 1
        stopped = np.zeros(self.config.num_slots, bool)
        result_tokens, result_logprobs = [], []
        for slot, s in enumerate(slots):
            mask = emitted[slot]
            result_tokens.append(tokens[slot][mask])
            result_logprobs.append(logprobs[slot][mask])
            if mask.any():
                # Every emitted token but the last is now cached; the last is pending.
                s.cached += int(mask.sum())
                s.pending = int(tokens[slot][mask][-1])
                s.last_used = self._clock
                self._mark_seen(slot, tokens[slot][mask])
                s.budget -= int(mask.sum())
                # Out of pages keeps the turn going: the next call gives the slot its pages.
                stopped[slot] = reasons[slot] not in (StopReason.RUNNING, StopReason.OUT_OF_PAGES)
                s.active = not stopped[slot]
        return DecodeResult(result_tokens, result_logprobs, stopped, reasons)

    def decode_arguments(self, visible: int, running: set[int] | None = None) -> tuple:
        """The decode program's arguments after the program: params, state, the slot table
        for `visible` pages (`running`: the active slots this call decodes, default all),
        the capacity and the presence mask (None without a repetition penalty), for lowering
        it, as the tests and tools do."""
        table = self._calls.slot_table(self._slots, visible, running)
        seen = None if self._seen is None else self._calls.to_device(self._seen)
        return self._params, self.state, table, np.int32(self.config.capacity), seen

    def decode_program(self, visible: int, num_steps: int | None = None) -> DecodeProgram:
        """The decode program of a call over `visible` pages (`num_steps`: steps_per_call)."""
        return DecodeProgram(
            self._graphdef,
            visible_pages=visible,
            num_steps=num_steps or self.config.steps_per_call,
            sampling=self.sampling,
            stop_tokens=self.config.stop_tokens,
            split_layer_weights=self.config.split_layer_weights,
        )

    def trace_decode(self, visible: int | None = None) -> jax.stages.Traced:
        """The decode program of a call over `visible` pages (default: a whole slot's) traced
        with this engine's arguments, to lower and compile (the tests, the memory planner);
        nothing runs."""
        visible = visible or self.config.pages_per_slot
        arguments = self.decode_arguments(visible)
        return self._calls.trace_decode(self.decode_program(visible), arguments)

    def trace_ingest(self, visible: int | None = None) -> jax.stages.Traced:
        """The ingest program over `visible` pages traced, like `trace_decode`."""
        visible = visible or self.config.pages_per_slot
        return self._calls.trace_ingest(self.state, self._graphdef, self._params, visible)

    def _run_decode(self, visible: int, num_steps: int, running: set[int]):
        program = self.decode_program(visible, num_steps)
        self.state, out = self._calls.decode(program, self.decode_arguments(visible, running))
        return out

    def _check_slot(self, slot: int) -> None:
        if self.state is None:
            raise RuntimeError("the engine's KV cache was released; reset() or reseed() first")
        if not 0 <= slot < self.config.num_slots:
            raise IndexError(f"slot {slot} out of range [0, {self.config.num_slots})")
        if slot not in self._local_set:
            raise IndexError(
                f"slot {slot} belongs to another process (this one's: {self.local_slots})"
            )
