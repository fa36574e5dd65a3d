"""Qwen2 decoder in Flax NNX.

Axis letters: B batch, T sequence, D hidden, N query heads, K key/value heads, H head dim,
F MLP hidden, V vocabulary, L layers. Every weight carries logical axis names in its `axes`
metadata (mapped to the mesh by `swejax.sharding`); sharding in the comments uses the
scaling-book notation with the default rules, e.g. W[D_fsdp, F_tp].
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from jax.ad_checkpoint import checkpoint_name
from jaxtyping import Array, Float, Int

from swejax.models.attention import (
    attend,
    attend_cached,
    attend_paged_decode,
    from_ring_order,
    to_ring_order,
)
from swejax.models.attention_impls import attention_impl
from swejax.models.config import ModelConfig
from swejax.models.kv_cache import LayerCache, read_cache, write_cache
from swejax.models.remat import REMAT_POLICIES
from swejax.models.rope import RotaryTables, apply_rope, rotary_tables
from swejax.sharding import constrain

_INIT_STD = 0.02  # Qwen2's initializer_range


def _param(rngs: nnx.Rngs, shape, axes, dtype, std=_INIT_STD) -> nnx.Param:
    return nnx.Param(std * jax.random.normal(rngs.params(), shape, dtype), axes=axes)


def _zeros(shape, axes, dtype) -> nnx.Param:
    return nnx.Param(jnp.zeros(shape, dtype), axes=axes)


class RMSNorm(nnx.Module):
    def __init__(self, dim: int, eps: float, param_dtype):
        self.eps = eps
        self.scale = nnx.Param(jnp.ones((dim,), param_dtype), axes=("norm",))

    def __call__(self, x: Float[Array, "B T D"]) -> Float[Array, "B T D"]:
        x32 = x.astype(jnp.float32)
        normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        # Cast before scaling, as Hugging Face does, so bfloat16 runs round the same way.
        return normed.astype(x.dtype) * self.scale[...].astype(x.dtype)


class Attention(nnx.Module):
    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        D, N, K, H = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        pd = jnp.dtype(cfg.param_dtype)
        self.cfg = cfg
        self.q_kernel = _param(
            rngs, (D, N, H), ("embed", "heads", "head_dim"), pd
        )  # [D_fsdp, N_tp, H]
        self.k_kernel = _param(rngs, (D, K, H), ("embed", "kv_heads", "head_dim"), pd)
        self.v_kernel = _param(rngs, (D, K, H), ("embed", "kv_heads", "head_dim"), pd)
        self.q_bias = _zeros((N, H), ("heads", "head_dim"), pd)
        self.k_bias = _zeros((K, H), ("kv_heads", "head_dim"), pd)
        self.v_bias = _zeros((K, H), ("kv_heads", "head_dim"), pd)
        self.o_kernel = _param(
            rngs, (N, H, D), ("heads", "head_dim", "embed"), pd
        )  # [N_tp, H, D_fsdp]

    def _project(self, x: Float[Array, "B T D"], rotary: RotaryTables):
        dt = x.dtype

        def project(kernel, bias, heads_axis):
            y = jnp.einsum("BTD,DNH->BTNH", x, kernel[...].astype(dt)) + bias[...].astype(dt)
            return constrain(y, ("batch", "seq", heads_axis, None))

        q = project(self.q_kernel, self.q_bias, "act_heads")
        k = project(self.k_kernel, self.k_bias, "act_kv_heads")
        v = project(self.v_kernel, self.v_bias, "act_kv_heads")
        q = checkpoint_name(apply_rope(q, rotary), "query")
        k = checkpoint_name(apply_rope(k, rotary), "key")
        return q, k, checkpoint_name(v, "value")

    def _output(self, out: Float[Array, "B T N H"]) -> Float[Array, "B T D"]:
        out = constrain(out, ("batch", "seq", "act_heads", None))
        return jnp.einsum("BTNH,NHD->BTD", out, self.o_kernel[...].astype(out.dtype))

    def __call__(
        self,
        x: Float[Array, "B T D"],
        rotary: RotaryTables,
        segment_ids: Int[Array, "B T"] | None,
    ) -> Float[Array, "B T D"]:
        q, k, v = self._project(x, rotary)
        return self._output(attend(q, k, v, segment_ids, impl=self.cfg.attention))

    def with_cache(
        self,
        x: Float[Array, "B T D"],
        rotary: RotaryTables,
        cache: LayerCache,
        layer: Int[Array, ""],
        page_table: Int[Array, "B n"],
        positions: Int[Array, "B T"],
    ) -> tuple[Float[Array, "B T D"], LayerCache]:
        """Write new tokens' K/V at `positions` (past the pages: dropped); attend over the cache."""
        q, k, v = self._project(x, rotary)
        # On a mesh each device writes and reads only its own slots' pages (`kv_cache`).
        cache = write_cache(cache, layer, k, v, page_table, positions)
        impl = self.cfg.attention
        if positions.shape[1] == 1 and attention_impl(impl).decode_kernel:  # a decode step
            out = attend_paged_decode(q, cache, layer, page_table, positions, impl=impl)
            return self._output(out), cache
        keys, values = read_cache(cache, layer, page_table)  # [B, pages, page, K, H]
        out = attend_cached(q, keys.astype(q.dtype), values.astype(q.dtype), positions)
        return self._output(out), cache


class MLP(nnx.Module):
    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        D, F = cfg.hidden_size, cfg.intermediate_size
        pd = jnp.dtype(cfg.param_dtype)
        self.gate_kernel = _param(rngs, (D, F), ("embed", "mlp"), pd)  # [D_fsdp, F_tp]
        self.up_kernel = _param(rngs, (D, F), ("embed", "mlp"), pd)
        self.down_kernel = _param(rngs, (F, D), ("mlp", "embed"), pd)  # [F_tp, D_fsdp]

    def __call__(self, x: Float[Array, "B T D"]) -> Float[Array, "B T D"]:
        dt = x.dtype
        gate = jnp.einsum("BTD,DF->BTF", x, self.gate_kernel[...].astype(dt))
        up = jnp.einsum("BTD,DF->BTF", x, self.up_kernel[...].astype(dt))
        hidden = constrain(jax.nn.silu(gate) * up, ("batch", "seq", "act_mlp"))
        return jnp.einsum("BTF,FD->BTD", hidden, self.down_kernel[...].astype(dt))


class DecoderLayer(nnx.Module):
    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        pd = jnp.dtype(cfg.param_dtype)
        self.attn_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, pd)
        self.attn = Attention(cfg, rngs)
        self.mlp_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, pd)
        self.mlp = MLP(cfg, rngs)

    def __call__(self, x, rotary: RotaryTables, segment_ids):
        attn_out = checkpoint_name(self.attn(self.attn_norm(x), rotary, segment_ids), "attn_out")
        return self._mlp_block(x + attn_out)

    def with_cache(self, x, rotary: RotaryTables, cache: LayerCache, layer, page_table, positions):
        normed = self.attn_norm(x)
        attn_out, cache = self.attn.with_cache(normed, rotary, cache, layer, page_table, positions)
        return self._mlp_block(x + attn_out), cache

    def _mlp_block(self, x):
        x = constrain(x, ("batch", "seq", None))
        mlp_out = checkpoint_name(self.mlp(self.mlp_norm(x)), "mlp_out")
        return constrain(x + mlp_out, ("batch", "seq", None))


def _stack_layers(cfg: ModelConfig, rngs: nnx.Rngs) -> DecoderLayer:
    """One DecoderLayer whose every weight has a leading layer axis, for `lax.scan`."""

    @nnx.split_rngs(splits=cfg.num_layers)
    @nnx.vmap(in_axes=(0,), out_axes=0)
    def make(layer_rngs: nnx.Rngs) -> DecoderLayer:
        return DecoderLayer(cfg, layer_rngs)

    layers = make(rngs)
    for _, variable in nnx.iter_graph(layers):
        if isinstance(variable, nnx.Variable):
            variable.set_metadata(axes=("layers", *variable.get_metadata()["axes"]))
    return layers


def default_positions(input_ids: Int[Array, "B T"]) -> Int[Array, "B T"]:
    return jnp.broadcast_to(jnp.arange(input_ids.shape[1], dtype=jnp.int32), input_ids.shape)


class Qwen2(nnx.Module):
    """Qwen2 causal language model: `model(input_ids) -> logits` (float32)."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        pd = jnp.dtype(cfg.param_dtype)
        V, D = cfg.vocab_size, cfg.hidden_size
        self.embed = _param(rngs, (V, D), ("vocab", "embed"), pd)  # [V_tp, D_fsdp]
        self.layers = _stack_layers(cfg, rngs)
        self.final_norm = RMSNorm(D, cfg.rms_norm_eps, pd)
        if not cfg.tie_word_embeddings:
            self.lm_head = _param(rngs, (D, V), ("embed", "vocab"), pd)  # [D_fsdp, V_tp]

    def hidden_states(
        self,
        input_ids: Int[Array, "B T"],
        positions: Int[Array, "B T"] | None = None,
        segment_ids: Int[Array, "B T"] | None = None,
    ) -> Float[Array, "B T D"]:
        """Final-norm hidden states. Packed rows pass per-segment `positions` and `segment_ids`."""
        if positions is None:
            positions = default_positions(input_ids)
        # With ring attention over a split sequence, the tokens take the ring's zigzag order
        # here and leave it after the last layer: every layer but attention works token by
        # token, and attention then never reorders its q, k, v and output.
        impl = self.cfg.attention
        input_ids, positions, segment_ids = to_ring_order(impl, input_ids, positions, segment_ids)
        rotary = self._rotary(positions)
        x = self._embed_tokens(input_ids)
        graphdef, stacked = nnx.split(self.layers)

        def layer_step(carry, layer_state):
            layer = nnx.merge(graphdef, layer_state)
            return layer(carry, rotary, segment_ids), None

        policy_name = self.cfg.remat
        if REMAT_POLICIES[policy_name] is not None:
            layer_step = jax.checkpoint(layer_step, policy=REMAT_POLICIES[policy_name])
        x, _ = jax.lax.scan(layer_step, x, stacked)
        return from_ring_order(impl, self.final_norm(x))

    def hidden_states_cached(
        self,
        input_ids: Int[Array, "B T"],
        positions: Int[Array, "B T"],
        cache: LayerCache,
        page_table: Int[Array, "B n"],
        layer_weights: Sequence[nnx.State] | None = None,
    ) -> tuple[Float[Array, "B T D"], LayerCache]:
        """Hidden states of new tokens at `positions`, reading and extending a paged KV cache.

        `cache` holds every layer's page pools, k and v of shape [L, P, page_size, K, H]; row b
        of `page_table` lists its sequence's pages. Tokens whose position lies past the table
        (n * page_size or more) are padding: nothing of theirs is written.

        `layer_weights` (from `split_layer_weights`) runs the layers from separate per-layer
        arrays instead of slicing the stacked ones.
        """
        capacity = page_table.shape[1] * cache.k.shape[2]
        # Rotary tables need a real position; padding's is clamped (its output is never read).
        rotary = self._rotary(jnp.minimum(positions, capacity - 1))
        x = self._embed_tokens(input_ids)
        graphdef, stacked = nnx.split(self.layers)

        def layer_step(carry, layer_inputs):
            x, cache = carry
            layer_state, index = layer_inputs
            layer = nnx.merge(graphdef, layer_state)
            return layer.with_cache(x, rotary, cache, index, page_table, positions), None

        if layer_weights is not None:
            carry = (x, cache)
            for index, layer_state in enumerate(layer_weights):
                carry, _ = layer_step(carry, (layer_state, jnp.int32(index)))
            x, cache = carry
        else:
            # The pools ride in the carry, written in place by layer index.
            layers = jnp.arange(self.cfg.num_layers, dtype=jnp.int32)
            (x, cache), _ = jax.lax.scan(layer_step, (x, cache), (stacked, layers))
        return self.final_norm(x), cache

    def split_layer_weights(self) -> list[nnx.State]:
        """Every layer's weights as arrays of their own: a copy of all the layer weights.

        Inside a loop (a layer scan, or decode steps), reading one layer out of the stacked
        arrays is a slice that XLA materialises as a copy of the layer's weights each time it
        runs. A decode step is small enough that this copy costs more than its matmuls (on an
        H100, 8 of 14 ms per step for the 7B model). Splitting once, outside the decode loop,
        pays that copy once per call of many steps instead of once per step.
        """
        _, stacked = nnx.split(self.layers)
        return [jax.tree.map(lambda a, i=i: a[i], stacked) for i in range(self.cfg.num_layers)]

    def logits(self, hidden: Float[Array, "B T D"]) -> Float[Array, "B T V"]:
        """Float32 logits from final hidden states (tied or separate output head)."""
        if self.cfg.tie_word_embeddings:
            equation, head, names = "BTD,VD->BTV", self.embed[...], ("vocab", None)
        else:
            equation, head, names = "BTD,DV->BTV", self.lm_head[...], (None, "vocab")
        # Cast, then gather over the "embed" split (as `_embed_tokens` does): the gathered
        # table is in the compute dtype, and a tied one is the same array as the lookup's.
        head = constrain(head.astype(hidden.dtype), names)
        out = jnp.einsum(equation, hidden, head, preferred_element_type=jnp.float32)
        return constrain(out, ("batch", "seq", "act_vocab"))

    def _embed_tokens(self, input_ids: Int[Array, "B T"]) -> Float[Array, "B T D"]:
        # The table is gathered over its "embed" split first (in the compute dtype: half the
        # bytes), as FSDP gathers every weight. Looked up in the split table instead, the rows
        # come out split over hidden units, and XLA can only move them to the batch and
        # sequence split by replicating the whole [B, T, D] activation on every device.
        table = constrain(self.embed[...].astype(jnp.dtype(self.cfg.dtype)), ("vocab", None))
        return constrain(table[input_ids], ("batch", "seq", None))

    def _rotary(self, positions: Int[Array, "B T"]) -> RotaryTables:
        cfg = self.cfg
        return rotary_tables(positions, cfg.head_dim, cfg.rope_theta, cfg.rope_scaling)

    def __call__(
        self,
        input_ids: Int[Array, "B T"],
        positions: Int[Array, "B T"] | None = None,
        segment_ids: Int[Array, "B T"] | None = None,
    ) -> Float[Array, "B T V"]:
        return self.logits(self.hidden_states(input_ids, positions, segment_ids))
