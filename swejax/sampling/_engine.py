"""The generation engine: slots over one KV cache, fed by prefill / extend, advanced by decode.

A slot holds one sequence. Its state is the tokens whose keys and values are in the cache
(`length` of them) and one pending token: the last token given or sampled, whose K/V are
computed when it is fed at the next decode step or extend. So each token runs through the model
exactly once over a whole multi-turn episode (linear prefill), and decode needs no logits kept
between calls.

Every jitted call has fixed shapes (one slot and `chunk` tokens for ingest; every slot for
decode) and donates the state, so the cache is updated in place and nothing recompiles as
sequences come and go. The model's parameters are read from the model at each call: the engine
samples from whatever weights the trainer has just written.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from swejax.models.qwen2 import LayerCache, Qwen2
from swejax.sampling._strategies import SamplingParams, sample
from swejax.sharding import activation_mesh, named_sharding

CACHE_AXES = ("layers", "batch", "cache_seq", "act_kv_heads", None)


class StopReason(enum.IntEnum):
    RUNNING = 0
    STOP_TOKEN = 1  # sampled an end-of-turn token
    BUDGET = 2  # sampled its per-turn token budget
    CONTEXT_FULL = 3  # the cache has no room for another token


class ContextFull(Exception):
    """A slot was given more tokens than its cache holds; the episode must end."""


@dataclasses.dataclass(frozen=True)
class EngineConfig:
    num_slots: int
    capacity: int  # longest sequence a slot holds, prompt and generations together
    chunk: int = 128  # tokens per ingest call
    steps_per_call: int = 16  # decode steps per host round trip
    stop_tokens: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        for name in ("num_slots", "capacity", "chunk", "steps_per_call"):
            if getattr(self, name) < 1:
                raise ValueError(f"EngineConfig.{name} must be positive, got {getattr(self, name)}")


class EngineState(NamedTuple):
    """Device state of every slot (a pytree, donated through each jitted call)."""

    cache: LayerCache  # k, v: [L, S, C, K, H]
    lengths: jax.Array  # [S] tokens whose K/V are in the cache
    pending: jax.Array  # [S] the next token to feed
    active: jax.Array  # [S] decoding in this turn
    budget: jax.Array  # [S] tokens it may still sample this turn
    key: jax.Array


@dataclasses.dataclass(frozen=True)
class DecodeResult:
    """What one `decode` call produced, per slot (host numpy)."""

    tokens: list[np.ndarray]  # new tokens of each slot (empty for idle slots)
    logprobs: list[np.ndarray]  # their log-probabilities under the sampled distribution
    stopped: np.ndarray  # [S] bool: the slot ended its turn during this call
    reasons: np.ndarray  # [S] StopReason of slots that stopped


def _ingest(graphdef, params, state: EngineState, slot, tokens, start, count) -> EngineState:
    """Write K/V of tokens[:count] at positions start.. of one slot's cache."""
    model = nnx.merge(graphdef, params)
    capacity = state.cache.k.shape[2]
    index = jnp.arange(tokens.shape[0])
    positions = jnp.where(index < count, start + index, capacity)  # padding is dropped
    slot_cache = LayerCache(
        *(jax.lax.dynamic_slice_in_dim(c, slot, 1, axis=1) for c in state.cache)
    )
    _, slot_cache = model.hidden_states_cached(tokens[None], positions[None], slot_cache)
    cache = LayerCache(
        *(
            jax.lax.dynamic_update_slice_in_dim(full, part, slot, axis=1)
            for full, part in zip(state.cache, slot_cache, strict=True)
        )
    )
    return state._replace(cache=cache)


def _set_sequence(state: EngineState, slot, length, pending) -> EngineState:
    return state._replace(
        lengths=state.lengths.at[slot].set(length), pending=state.pending.at[slot].set(pending)
    )


def _set_turn(state: EngineState, slot, active, budget) -> EngineState:
    return state._replace(
        active=state.active.at[slot].set(active), budget=state.budget.at[slot].set(budget)
    )


def _decode(
    graphdef, params, state: EngineState, num_steps: int, sampling: SamplingParams, stop_tokens
):
    """Up to `num_steps` steps for every active slot; stops early once no slot is active."""
    model = nnx.merge(graphdef, params)
    num_slots, capacity = state.lengths.shape[0], state.cache.k.shape[2]
    stops = jnp.asarray(stop_tokens, jnp.int32).reshape(-1)

    def step(carry):
        i, state, tokens_out, logprobs_out, emitted, reasons = carry
        positions = jnp.where(state.active, state.lengths, capacity)[:, None]
        hidden, cache = model.hidden_states_cached(state.pending[:, None], positions, state.cache)
        key, subkey = jax.random.split(state.key)
        new_tokens, logprobs = sample(model.logits(hidden)[:, 0], subkey, sampling)
        active = state.active
        lengths = state.lengths + active
        budget = state.budget - active
        reason = jnp.select(
            # The sequence is the cached tokens plus the new pending one; it may fill the cache.
            [jnp.isin(new_tokens, stops), budget <= 0, lengths + 1 >= capacity],
            [StopReason.STOP_TOKEN, StopReason.BUDGET, StopReason.CONTEXT_FULL],
            StopReason.RUNNING,
        )
        ended = active & (reason != StopReason.RUNNING)
        state = EngineState(
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


class Engine:
    """Slots over one KV cache on the model's mesh. See the module docstring for the protocol."""

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
        self.reset()
        # Fixed output shardings: every call hands back the state laid out exactly as it came,
        # so no call ever sees a new input layout and recompiles.
        state_out = self._state_shardings
        replicated = self._replicated
        self._ingest = jax.jit(_ingest, static_argnums=0, donate_argnums=2, out_shardings=state_out)
        self._decode = jax.jit(
            _decode,
            static_argnums=(0, 3, 4, 5),
            donate_argnums=2,
            out_shardings=(state_out, (replicated,) * 4),
        )
        self._set_sequence = jax.jit(_set_sequence, donate_argnums=0, out_shardings=state_out)
        self._set_turn = jax.jit(_set_turn, donate_argnums=0, out_shardings=state_out)

    # --- state ---------------------------------------------------------------------------

    @property
    def _replicated(self) -> jax.sharding.Sharding:
        if self.mesh is None:
            return jax.sharding.SingleDeviceSharding(jax.devices()[0])
        return jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec())

    def _cache_shape(self) -> tuple[int, ...]:
        cfg, mcfg = self.config, self.model.cfg
        return (mcfg.num_layers, cfg.num_slots, cfg.capacity, mcfg.num_kv_heads, mcfg.head_dim)

    @property
    def _state_shardings(self) -> EngineState:
        shape = self._cache_shape()
        if self.mesh is None:
            cache = self._replicated
        else:
            cache = named_sharding(self.mesh, CACHE_AXES, shape)
        rep = self._replicated
        return EngineState(LayerCache(cache, cache), rep, rep, rep, rep, rep)

    def _new_state(self) -> EngineState:
        shape, dtype, slots = (
            self._cache_shape(),
            jnp.dtype(self.model.cfg.dtype),
            self.config.num_slots,
        )

        def init() -> EngineState:
            return EngineState(
                cache=LayerCache(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype)),
                lengths=jnp.zeros((slots,), jnp.int32),
                pending=jnp.zeros((slots,), jnp.int32),
                active=jnp.zeros((slots,), bool),
                budget=jnp.zeros((slots,), jnp.int32),
                key=jax.random.key(self._seed),
            )

        return jax.jit(init, out_shardings=self._state_shardings)()

    def reset(self) -> None:
        """Every slot empty (the cache is reallocated; use `free` between episodes)."""
        self.state = self._new_state()
        self._lengths = np.zeros(self.config.num_slots, np.int64)  # host mirror
        self._pending: list[int | None] = [None] * self.config.num_slots

    def free(self, slot: int) -> None:
        """Forget a slot's sequence; its stale cache entries are masked, never read."""
        self._check_slot(slot)
        self._lengths[slot] = 0
        self._pending[slot] = None
        with activation_mesh(self.mesh):
            self.state = self._set_sequence(self.state, jnp.int32(slot), jnp.int32(0), jnp.int32(0))
            self.state = self._set_turn(self.state, jnp.int32(slot), jnp.bool_(False), jnp.int32(0))

    def length(self, slot: int) -> int:
        """Tokens in the slot's sequence so far, the pending one included."""
        return int(self._lengths[slot]) + (self._pending[slot] is not None)

    # --- feeding tokens ------------------------------------------------------------------

    def prefill(self, slot: int, tokens: Sequence[int]) -> None:
        """Start a new sequence in `slot` with `tokens` (a prompt)."""
        self.free(slot)
        self.extend(slot, tokens)

    def extend(self, slot: int, tokens: Sequence[int]) -> None:
        """Append `tokens` (an observation, say) after everything the slot already holds."""
        self._check_slot(slot)
        tokens = [int(t) for t in tokens]
        if not tokens:
            return
        pending = self._pending[slot]
        sequence = ([] if pending is None else [pending]) + tokens
        if self._lengths[slot] + len(sequence) > self.config.capacity:
            raise ContextFull(
                f"slot {slot} holds {self.length(slot)} tokens; {len(tokens)} more exceed its "
                f"capacity of {self.config.capacity}"
            )
        to_ingest, self._pending[slot] = sequence[:-1], sequence[-1]
        chunk = self.config.chunk
        for begin in range(0, len(to_ingest), chunk):
            part = to_ingest[begin : begin + chunk]
            padded = np.zeros(chunk, np.int32)
            padded[: len(part)] = part
            with activation_mesh(self.mesh):
                self.state = self._ingest(
                    self._graphdef,
                    nnx.state(self.model),
                    self.state,
                    jnp.int32(slot),
                    jnp.asarray(padded),
                    jnp.int32(self._lengths[slot]),
                    jnp.int32(len(part)),
                )
            self._lengths[slot] += len(part)
        with activation_mesh(self.mesh):
            self.state = self._set_sequence(
                self.state,
                jnp.int32(slot),
                jnp.int32(self._lengths[slot]),
                jnp.int32(self._pending[slot]),
            )

    # --- decoding ------------------------------------------------------------------------

    def start_turn(self, slot: int, max_tokens: int) -> None:
        """Let `slot` sample up to `max_tokens` tokens in the coming decode calls."""
        self._check_slot(slot)
        if self._pending[slot] is None:
            raise ValueError(f"slot {slot} is empty: prefill it before decoding")
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be positive, got {max_tokens}")
        if self.length(slot) >= self.config.capacity:
            raise ContextFull(f"slot {slot} is full ({self.config.capacity} tokens)")
        with activation_mesh(self.mesh):
            self.state = self._set_turn(
                self.state, jnp.int32(slot), jnp.bool_(True), jnp.int32(max_tokens)
            )

    def decode(self, num_steps: int | None = None) -> DecodeResult:
        """Run up to `num_steps` (default: config.steps_per_call) steps for every active slot."""
        num_steps = num_steps or self.config.steps_per_call
        was_active = np.asarray(self.state.active)
        with activation_mesh(self.mesh):
            self.state, out = self._decode(
                self._graphdef,
                nnx.state(self.model),
                self.state,
                num_steps,
                self.sampling,
                self.config.stop_tokens,
            )
        tokens, logprobs, emitted, reasons = (np.asarray(x) for x in out)
        now_active = np.asarray(self.state.active)
        result_tokens, result_logprobs = [], []
        for slot in range(self.config.num_slots):
            mask = emitted[slot]
            result_tokens.append(tokens[slot][mask])
            result_logprobs.append(logprobs[slot][mask])
            if mask.any():
                # Every emitted token but the last is now in the cache; the last is pending.
                self._lengths[slot] += int(mask.sum())
                self._pending[slot] = int(tokens[slot][mask][-1])
        return DecodeResult(
            tokens=result_tokens,
            logprobs=result_logprobs,
            stopped=was_active & ~now_active,
            reasons=reasons,
        )

    def _check_slot(self, slot: int) -> None:
        if not 0 <= slot < self.config.num_slots:
            raise IndexError(f"slot {slot} out of range [0, {self.config.num_slots})")
