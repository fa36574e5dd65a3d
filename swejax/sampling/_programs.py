"""The engine's device programs: ingest (write prompt or observation K/V), decode (sample up to
N steps per slot) and set-slot (overwrite one slot's bookkeeping).

Each program is a frozen, hashable dataclass of its static configuration (graphdef, visible
pages, steps, sampling, ...), called with the arrays it works on. `jax.jit` takes the program
object as its one static argument, so an equal object reuses the compiled program and a new
value (another page bucket) compiles a new one. The `jit_*` functions give the jitted calls:
the state is donated (the cache is updated in place) and handed back at the shardings it came
in, fixed, so no call sees a new input layout and recompiles.
"""

from __future__ import annotations

import dataclasses
import enum
import functools

import jax
import jax.numpy as jnp
from flax import nnx

from swejax.sampling._state import EngineState
from swejax.sampling._strategies import SamplingParams, sample


class StopReason(enum.IntEnum):
    RUNNING = 0
    STOP_TOKEN = 1  # sampled an end-of-turn token
    BUDGET = 2  # sampled its per-turn token budget
    CONTEXT_FULL = 3  # the sequence reached the slot's capacity
    OUT_OF_PAGES = 4  # the shared page pool had no page left for it


@dataclasses.dataclass(frozen=True)
class IngestProgram:
    """Write K/V of a chunk of given tokens for several slots, attending over
    `visible_pages` pages of each."""

    graphdef: nnx.GraphDef
    visible_pages: int

    def __call__(self, params, state: EngineState, slots, tokens, counts) -> EngineState:
        """Write K/V of tokens[r, :counts[r]] after the cached tokens of slots[r], for every
        row r (slots [R], tokens [R, chunk], counts [R]).

        Rows with count 0 are padding (their slot may repeat a real row's): nothing of theirs
        is written and their slot's length is unchanged.
        """
        model = nnx.merge(self.graphdef, params)
        index = jnp.arange(tokens.shape[1])[None, :]
        starts = state.lengths[slots][:, None]
        # Padding lies past every visible page, where the cache drops writes.
        beyond = self.visible_pages * state.cache.k.shape[2]
        positions = jnp.where(index < counts[:, None], starts + index, beyond)
        pages = state.page_table[slots][:, : self.visible_pages]
        _, cache = model.hidden_states_cached(tokens, positions, state.cache, pages)
        return state._replace(cache=cache, lengths=state.lengths.at[slots].add(counts))


@dataclasses.dataclass(frozen=True)
class DecodeProgram:
    """Up to `num_steps` sampling steps for every active slot, attending over
    `visible_pages` pages of each.

    `split_layer_weights`: copy the layer weights out of the stacked arrays once per call
    rather than once per step (`Qwen2.split_layer_weights`).
    """

    graphdef: nnx.GraphDef
    visible_pages: int
    num_steps: int
    sampling: SamplingParams
    stop_tokens: tuple[int, ...]
    split_layer_weights: bool

    def __call__(self, params, state: EngineState, capacity):
        """(state, (tokens [S, steps], logprobs [S, steps], emitted [S, steps], reasons [S]));
        stops early once no slot is active. `emitted[s, i]`: slot s sampled tokens[s, i]."""
        model = nnx.merge(self.graphdef, params)
        num_slots, num_steps = state.lengths.shape[0], self.num_steps
        beyond = self.visible_pages * state.cache.k.shape[2]
        stops = jnp.asarray(self.stop_tokens, jnp.int32).reshape(-1)
        pages = state.page_table[:, : self.visible_pages]
        layer_weights = model.split_layer_weights() if self.split_layer_weights else None

        def step(carry):
            i, state, tokens_out, logprobs_out, emitted, reasons = carry
            positions = jnp.where(state.active, state.lengths, beyond)[:, None]
            hidden, cache = model.hidden_states_cached(
                state.pending[:, None], positions, state.cache, pages, layer_weights
            )
            keys = token_keys(state.key, state.streams, state.lengths)
            new_tokens, logprobs = sample(model.logits(hidden)[:, 0], keys, self.sampling)
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


def token_keys(base: jax.Array, streams: jax.Array, lengths: jax.Array) -> jax.Array:
    """[S] keys: slot s's next token drawn by (base key, its stream, its position). The pending
    token sits at `lengths[s]`, so each position of a sequence gets a key of its own."""

    def one(stream, position):
        key = jax.random.fold_in(jax.random.fold_in(base, stream[0]), stream[1])
        return jax.random.fold_in(key, position)

    return jax.vmap(one)(streams, lengths)


@dataclasses.dataclass(frozen=True)
class SetSlotProgram:
    """Overwrite one slot's bookkeeping; its K/V pages are untouched. Nothing is static (the
    slot is an argument), so one compiled program serves every slot."""

    def __call__(
        self, state: EngineState, slot, pages, limit, length, pending, active, budget, stream
    ) -> EngineState:
        return state._replace(
            streams=state.streams.at[slot].set(stream),
            page_table=state.page_table.at[slot].set(pages),
            limit=state.limit.at[slot].set(limit),
            lengths=state.lengths.at[slot].set(length),
            pending=state.pending.at[slot].set(pending),
            active=state.active.at[slot].set(active),
            budget=state.budget.at[slot].set(budget),
        )


# One jitted function per layout, shared by every engine with that layout: jit caches its
# compiled programs per function object, so an engine built again (a new phase, a new test)
# reuses what an earlier one compiled instead of compiling it all again.
@functools.cache
def jit_ingest(shardings: EngineState):
    """Ingest jitted: (program, params, state (donated), slots, tokens, counts) -> state."""
    return jax.jit(
        IngestProgram.__call__, static_argnums=0, donate_argnums=2, out_shardings=shardings
    )


@functools.cache
def jit_decode(shardings: EngineState):
    """Decode jitted: (program, params, state (donated), capacity) -> (state, outputs), the
    state at `shardings` (an EngineState of shardings, `state_shardings`) and the per-slot
    outputs laid out like the per-slot bookkeeping."""
    outputs = (shardings.lengths,) * 4
    return jax.jit(
        DecodeProgram.__call__,
        static_argnums=0,
        donate_argnums=2,
        out_shardings=(shardings, outputs),
    )


@functools.cache
def jit_set_slot(shardings: EngineState):
    """Set-slot jitted: (program, state (donated), slot, pages, limit, length, pending, active,
    budget, stream) -> state."""
    return jax.jit(
        SetSlotProgram.__call__, static_argnums=0, donate_argnums=1, out_shardings=shardings
    )
