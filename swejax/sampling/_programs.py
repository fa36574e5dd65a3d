"""The engine's device programs: ingest (write prompt or observation K/V) and decode (sample up
to N steps per slot), each taking the host's bookkeeping of the rows it serves as arguments.

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

from swejax.models.kv_cache import copy_in_pages, copy_out_pages
from swejax.sampling._layout import SplitWeights
from swejax.sampling._state import EngineState, SlotTable
from swejax.sampling._strategies import SamplingParams, sample


class StopReason(enum.IntEnum):
    RUNNING = 0
    STOP_TOKEN = 1  # sampled an end-of-turn token
    BUDGET = 2  # sampled its per-turn token budget
    CONTEXT_FULL = 3  # the sequence reached the slot's capacity
    # The slot's pages ran out: never seen by the engine's users, which gives a slot its pages
    # before each call (preempting others) and keeps the turn going.
    OUT_OF_PAGES = 4


@dataclasses.dataclass(frozen=True)
class IngestProgram:
    """Write K/V of a chunk of given tokens for several slots, attending over
    `visible_pages` pages of each."""

    graphdef: nnx.GraphDef
    visible_pages: int

    def __call__(self, params, state: EngineState, tokens, counts, starts, pages) -> EngineState:
        """Write K/V of tokens[r, :counts[r]] at positions starts[r].. of the sequence whose
        visible pages are pages[r], for every row r (tokens [R, chunk], counts, starts [R],
        pages [R, visible_pages]); rows are split over the batch shards like the slots.

        Rows with count 0 are padding: nothing of theirs is written.
        """
        model, layer_weights = merged(self.graphdef, params, split=False)
        index = jnp.arange(tokens.shape[1])[None, :]
        # Padding lies past every visible page, where the cache drops writes.
        beyond = self.visible_pages * state.cache.k.shape[2]
        positions = jnp.where(index < counts[:, None], starts[:, None] + index, beyond)
        _, cache = model.hidden_states_cached(tokens, positions, state.cache, pages, layer_weights)
        return state._replace(cache=cache)


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

    def __call__(self, params, state: EngineState, table: SlotTable, capacity, seen=None):
        """(state, (tokens [S, steps], logprobs [S, steps], emitted [S, steps], reasons [S]));
        stops early once no slot is active. `emitted[s, i]`: slot s sampled tokens[s, i]. The
        table's running values (lengths, pending, active, budget) advance in the loop; the host
        advances its own copy from the outputs.

        `seen` [S, V] bool: the tokens in each slot's sequence, the pending one included (only
        with a repetition penalty; None otherwise, and nothing of it is carried). Each step
        adds the tokens it samples, as the host does to its own copy from the outputs."""
        model, layer_weights = merged(self.graphdef, params, self.split_layer_weights)
        num_slots, num_steps = table.lengths.shape[0], self.num_steps
        beyond = self.visible_pages * state.cache.k.shape[2]
        stops = jnp.asarray(self.stop_tokens, jnp.int32).reshape(-1)
        pages = table.pages

        def step(carry):
            i, cache, table, tokens_out, logprobs_out, emitted, reasons, seen = carry
            positions = jnp.where(table.active, table.lengths, beyond)[:, None]
            hidden, cache = model.hidden_states_cached(
                table.pending[:, None], positions, cache, pages, layer_weights
            )
            keys = token_keys(state.key, table.streams, table.lengths)
            logits = model.logits(hidden)[:, 0]
            new_tokens, logprobs = sample(logits, keys, self.sampling, seen)
            active = table.active
            if seen is not None:
                seen = mark_seen(seen, new_tokens, active)
            lengths = table.lengths + active
            budget = table.budget - active
            # The sequence is the cached tokens plus the new pending one, which needs a row next.
            reason = jnp.select(
                [
                    jnp.isin(new_tokens, stops),
                    budget <= 0,
                    lengths + 1 >= capacity,
                    lengths + 1 > table.limit,
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
            table = table._replace(
                lengths=lengths,
                pending=jnp.where(active, new_tokens, table.pending),
                active=active & ~ended,
                budget=budget,
            )
            tokens_out = tokens_out.at[:, i].set(new_tokens)
            logprobs_out = logprobs_out.at[:, i].set(logprobs)
            emitted = emitted.at[:, i].set(active)
            reasons = jnp.where(ended, reason, reasons)
            return i + 1, cache, table, tokens_out, logprobs_out, emitted, reasons, seen

        def keep_going(carry):
            return (carry[0] < num_steps) & jnp.any(carry[2].active)

        init = (
            jnp.int32(0),
            state.cache,
            table,
            jnp.zeros((num_slots, num_steps), jnp.int32),
            jnp.zeros((num_slots, num_steps), jnp.float32),
            jnp.zeros((num_slots, num_steps), bool),
            jnp.zeros((num_slots,), jnp.int32),
            seen,
        )
        _, cache, _, tokens, logprobs, emitted, reasons, _ = jax.lax.while_loop(
            keep_going, step, init
        )
        return state._replace(cache=cache), (tokens, logprobs, emitted, reasons)


def merged(graphdef: nnx.GraphDef, params, split: bool) -> tuple[nnx.Module, list | None]:
    """The model of a program's `params` and the per-layer weights to run it with: a decode
    copy's own (`SplitWeights`), or, from a model state, copied out of the stacked arrays once
    (`split`) or none (the layers run from the stack)."""
    if isinstance(params, SplitWeights):
        return nnx.merge(graphdef, params.model_state()), list(params.layers)
    model = nnx.merge(graphdef, params)
    return model, model.split_layer_weights() if split else None


def mark_seen(seen: jax.Array, tokens: jax.Array, active: jax.Array) -> jax.Array:
    """`seen` [S, V] with tokens[s] set in each active row s (an idle row's draw is no token
    of its sequence: it is dropped, out of bounds)."""
    rows = jnp.arange(seen.shape[0])
    return seen.at[rows, jnp.where(active, tokens, seen.shape[1])].set(True, mode="drop")


def token_keys(base: jax.Array, streams: jax.Array, lengths: jax.Array) -> jax.Array:
    """[S] keys: slot s's next token drawn by (base key, its stream, its position). The pending
    token sits at `lengths[s]`, so each position of a sequence gets a key of its own."""

    def one(stream, position):
        key = jax.random.fold_in(jax.random.fold_in(base, stream[0]), stream[1])
        return jax.random.fold_in(key, position)

    return jax.vmap(one)(streams, lengths)


# One jitted function per layout, shared by every engine with that layout: jit caches its
# compiled programs per function object, so an engine built again (a new phase, a new test)
# reuses what an earlier one compiled instead of compiling it all again.
@functools.cache
def jit_ingest(shardings: EngineState):
    """Ingest jitted: (program, params, state (donated), tokens, counts, starts, pages) ->
    state."""
    return jax.jit(
        IngestProgram.__call__, static_argnums=0, donate_argnums=2, out_shardings=shardings
    )


@functools.cache
def jit_decode(shardings: EngineState, rows: jax.sharding.Sharding):
    """Decode jitted: (program, params, state (donated), table, capacity[, seen]) -> (state,
    outputs), the state at `shardings` (an EngineState of shardings, `state_shardings`) and
    the per-slot outputs at `rows` (split like the slots, `row_sharding`)."""
    return jax.jit(
        DecodeProgram.__call__,
        static_argnums=0,
        donate_argnums=2,
        out_shardings=(shardings, (rows,) * 4),
    )


@functools.cache
def jit_swap_out(rows: jax.sharding.Sharding):
    """(state, pages [R, n]) -> (k, v) [R, L, n, page, K, H] at `rows`: each row's pages of
    every layer, copied out (`kv_cache.copy_out_pages`). Reads only."""

    def swap_out(state: EngineState, pages):
        return copy_out_pages(state.cache, pages)

    return jax.jit(swap_out, out_shardings=(rows, rows))


@functools.cache
def jit_swap_in(shardings: EngineState):
    """(state (donated), pages [R, n], k, v [R, L, n, page, K, H]) -> state with each row's
    pages written back (`kv_cache.copy_in_pages`)."""

    def swap_in(state: EngineState, pages, k, v) -> EngineState:
        return state._replace(cache=copy_in_pages(state.cache, pages, k, v))

    return jax.jit(swap_in, donate_argnums=0, out_shardings=shardings)
