"""The analytic memory model: what each part of a train step, and of the rollout beside it,
takes on one device, by counting bytes (`analytic_breakdown`).

Weights, AdamW moments, gradients, activations under the remat policy, attention by
implementation, the output head's chunk and the batch; the rollout's items (the decode copy,
the KV pool: released before each train step) come from `swejax.memory_plan._rollout`. Pure
arithmetic on a mesh shape (no devices), so it also answers for attention kernels that do not
run on this machine. Local shapes follow
`swejax.sharding.logical_to_spec`, the same rule the model uses, so a dimension a mesh axis
does not divide (28 heads on tensor=8) is counted as replicated, as it is at run time.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import AbstractMesh, Mesh

from swejax.config import EngineConfig
from swejax.models import abstract_model
from swejax.models.attention_impls import attention_impl
from swejax.models.build import is_variable
from swejax.models.config import ModelConfig
from swejax.models.kv_cache import num_shards, pool_page_axes, pool_spec
from swejax.sharding import LOGICAL_RULES, MESH_AXES, logical_to_spec
from swejax.train import BATCH_FIELDS, Objective

GIB = 2**30
BATCH_DTYPES = {
    "tokens": jnp.int32,
    "positions": jnp.int32,
    "segment_ids": jnp.int32,
    "loss_mask": jnp.bool_,
    "old_logprobs": jnp.float32,
    "advantages": jnp.float32,
}


@dataclasses.dataclass(frozen=True)
class PlanSpec:
    """One training configuration to plan: model, mesh, rows, and the rollout cache beside it."""

    model: ModelConfig
    mesh: dict[str, int]  # every axis of MESH_AXES, resolved (no -1)
    seq: int  # tokens per packed row
    micro_batch_rows: int = 1  # rows each batch shard (data x fsdp) holds per micro-batch
    micro_batches: int = 1  # gradient accumulation steps per optimizer step
    logits_chunk: int = 1024  # positions per output-head chunk (token_logprobs)
    engine: EngineConfig | None = None  # the rollout beside the step; None: no rollout
    objective: Objective = Objective("dapo")  # what the step computes (its eps change no byte)

    def __post_init__(self) -> None:
        if sorted(self.mesh) != sorted(MESH_AXES):
            raise ValueError(f"mesh needs exactly the axes {MESH_AXES}, got {sorted(self.mesh)}")
        for name in ("seq", "micro_batch_rows", "micro_batches", "logits_chunk"):
            if getattr(self, name) < 1:
                raise ValueError(f"PlanSpec.{name} must be positive, got {getattr(self, name)}")

    @property
    def devices(self) -> int:
        return math.prod(self.mesh.values())

    @property
    def rows(self) -> int:
        """Global rows of one micro-batch."""
        return self.micro_batch_rows * self.mesh["data"] * self.mesh["fsdp"]

    @property
    def batch_rows(self) -> int:
        """Global rows of the whole batch the step takes."""
        return self.rows * self.micro_batches

    @property
    def pool_pages(self) -> int:
        """Pages of the rollout's KV pool (0 without a rollout)."""
        return self.engine.pool_pages if self.engine else 0


@dataclasses.dataclass(frozen=True)
class Item:
    """One line of the breakdown."""

    name: str
    bytes: int
    # "state": lives across steps; "step": the backward pass; "update": the optimizer update
    # after it; "rollout": decoding only (the loop releases the KV cache before training).
    phase: str
    note: str = ""


@dataclasses.dataclass(frozen=True)
class Breakdown:
    items: tuple[Item, ...]
    attention: str  # the implementation the attention line counts

    def total(self, phases: Sequence[str]) -> int:
        return sum(item.bytes for item in self.items if item.phase in phases)

    @property
    def train_step(self) -> int:
        """Peak of a train step: the state, and then the larger of the backward pass's buffers
        and the optimizer update's (which runs once the activations are gone)."""
        update = self.get("gradients") + self.total(("update",))
        return self.total(("state",)) + max(self.total(("step",)), update)

    @property
    def train_phase(self) -> int:
        """Training: the train step alone (`Loop.rollout` releases the engines' KV pools)."""
        return self.train_step

    @property
    def rollout_phase(self) -> int:
        """Decoding: weights and optimizer state stay, the cache and decode buffers are used."""
        return self.total(("state", "rollout"))

    def get(self, name: str) -> int:
        return sum(item.bytes for item in self.items if item.name == name)


# --- counting ----------------------------------------------------------------------------------


def abstract_mesh(sizes: dict[str, int]) -> AbstractMesh:
    return AbstractMesh(tuple(sizes[a] for a in MESH_AXES), MESH_AXES)


def local_elements(
    names: Sequence[str | None], shape: Sequence[int], mesh: AbstractMesh | Mesh
) -> int:
    """Elements one device holds of an array with logical `names` (the model's own rule)."""
    return math.prod(_local_dims(names, shape, mesh))


def _local_dims(names, shape, mesh) -> tuple[int, ...]:
    spec = logical_to_spec(names, shape, mesh)
    return tuple(
        size // (1 if axes is None else math.prod(mesh.shape[a] for a in _as_tuple(axes)))
        for size, axes in zip(shape, spec, strict=True)
    )


def _as_tuple(axes) -> tuple[str, ...]:
    return (axes,) if isinstance(axes, str) else tuple(axes)


@dataclasses.dataclass(frozen=True)
class _ParamCounts:
    """Parameter elements per device, split by where they live in the step."""

    total: int  # everything, at its sharding
    layers_gathered: int  # one layer's weights gathered over data, fsdp and context (not tensor)
    embed_gathered: int  # the embedding table, gathered alike
    head_gathered: int  # the untied output head, gathered alike (0 when tied)
    layers_stacked: int  # all layers' weights at their sharding


def _param_counts(cfg: ModelConfig, mesh: AbstractMesh) -> _ParamCounts:
    # The axes FSDP gathers a weight over before using it: those of the "embed" rule.
    gathered = abstract_mesh({**mesh.shape, **dict.fromkeys(("data", *LOGICAL_RULES["embed"]), 1)})
    total = layers_gathered = layers_stacked = embed = head = 0
    state = nnx.state(abstract_model(cfg))
    for path, var in jax.tree_util.tree_flatten_with_path(state, is_leaf=is_variable)[0]:
        names, shape = var.get_metadata()["axes"], var.shape
        local = local_elements(names, shape, mesh)
        total += local
        top = str(getattr(path[0], "key", path[0]))
        if top == "layers":
            layers_stacked += local
            layers_gathered += local_elements(names, shape, gathered) // cfg.num_layers
        elif top == "embed":
            embed = local_elements(names, shape, gathered)
        elif top == "lm_head":
            head = local_elements(names, shape, gathered)
    return _ParamCounts(total, layers_gathered, embed, head, layers_stacked)


class _Activations(NamedTuple):
    """Elements per device of one layer's activations [B, T, ...] by logical names."""

    resid: int  # [B, T, D]: the hidden dimension is never split
    q: int  # [B, T, N, H]
    kv: int  # [B, T, K, H]
    mlp: int  # [B, T, F]


def _activations(cfg: ModelConfig, mesh: AbstractMesh, rows: int, seq: int) -> _Activations:
    B, T, N, K, H = rows, seq, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    return _Activations(
        resid=local_elements(("batch", "seq", None), (B, T, cfg.hidden_size), mesh),
        q=local_elements(("batch", "seq", "act_heads", None), (B, T, N, H), mesh),
        kv=local_elements(("batch", "seq", "act_kv_heads", None), (B, T, K, H), mesh),
        mlp=local_elements(("batch", "seq", "act_mlp"), (B, T, cfg.intermediate_size), mesh),
    )


def _layer_intermediates(cfg: ModelConfig, mesh: AbstractMesh, rows: int, seq: int) -> int:
    """Bytes one decoder layer's forward produces for its backward (policy "none"), without the
    attention scores (counted by implementation)."""
    c = jnp.dtype(cfg.dtype).itemsize
    a = _activations(cfg, mesh, rows, seq)
    norms = 2 * a.resid * (c + 4)  # two RMSNorms: float32 input copy and the normed output
    stream = 4 * a.resid * c  # attention output, residual sum, MLP output, next residual
    projections = (a.q + 2 * a.kv + a.q + a.kv + a.q) * c  # q k v, roped q k, attention out
    mlp_acts = 4 * a.mlp * c  # gate, up, silu(gate), silu(gate) * up
    return norms + stream + projections + mlp_acts


def _saved_per_layer(cfg: ModelConfig, mesh: AbstractMesh, rows: int, seq: int) -> int:
    """Bytes the layer scan keeps per layer for the backward pass, by remat policy."""
    c = jnp.dtype(cfg.dtype).itemsize
    a = _activations(cfg, mesh, rows, seq)
    carry = a.resid * c  # the layer's input, which the scan always keeps
    projections = (a.q + 2 * a.kv + 2 * a.resid + 2 * a.mlp) * c  # q k v, o, gate up, down
    policy = cfg.remat
    if policy == "full":
        return carry
    if policy == "save_attn_mlp_out":
        return 3 * carry
    if policy == "dots_no_batch":
        return carry + projections
    if policy == "dots":  # also the attention einsums, which carry batch dimensions
        return carry + projections + _attention_bytes(cfg, mesh, rows, seq, cfg.attention, 1)
    if policy == "none":
        scores = _attention_bytes(cfg, mesh, rows, seq, cfg.attention, 1)
        return carry + _layer_intermediates(cfg, mesh, rows, seq) + scores
    raise ValueError(f"no memory model for remat={policy!r}")


def _attention_bytes(
    cfg: ModelConfig, mesh: AbstractMesh, rows: int, seq: int, impl: str, copies: int = 2
) -> int:
    """Attention's own buffers in one layer, beyond q, k, v and its output, by the registry's
    kernel and context mode (`swejax.models.attention_impls`). S is every key (T) where each
    device holds them all, the local length in a ring's blocks.

    reference kernel: float32 logits [B, N, T_local, S] with the mask as an additive float32
      bias [B, T_local, S] and the boolean mask; `copies` float32 score-sized buffers live at
      once in the backward pass (XLA fuses the rest; 7B at 32k on CPU: 2). In a ring (custom
      VJP: nothing T x S is kept between steps or passes) twice the copies, as XLA overlaps the
      unrolled ring steps.
    flash kernel: the row log-sum-exp and the float32 output accumulator; blocks stay on chip.
    cudnn kernel: flash-like, plus the packed-segment mask it is handed as a dense [B, 1, T, S]
      bool.
    """
    entry = attention_impl(impl)
    context = mesh.shape["context"]
    entry.check_context(context)  # a whole-sequence kernel refuses a split sequence
    N, H = cfg.num_heads, cfg.head_dim
    local_seq = seq // context if seq % context == 0 else seq
    keys = local_seq if entry.ring else seq
    rows_local = local_elements(("batch",), (rows,), mesh)
    heads_local = local_elements(("act_heads",), (N,), mesh)
    if entry.kernel != "reference":
        lse_and_acc = rows_local * heads_local * local_seq * (4 + 4 * H)
        mask = rows_local * local_seq * keys if entry.kernel == "cudnn" else 0
        return lse_and_acc + mask
    if entry.ring:
        # The ring's steps are unrolled and XLA overlaps them: 72B at 131k, context=4 on CPU
        # holds about 4.5 block-sized float32 buffers at once (145 GiB for 32 GiB blocks).
        copies = 2 * copies
    scores = rows_local * heads_local * local_seq * keys
    bias = rows_local * local_seq * keys * (4 + 1)  # float32 bias and the boolean mask
    return scores * 4 * copies + bias


def _attention_note(impl: str) -> str:
    """What the attention line counts, in a few words."""
    entry = attention_impl(impl)
    if not entry.quadratic:
        return "O(T): lse and accumulator"
    held = "float32 T x S scores" if entry.kernel == "reference" else "a T x S boolean mask"
    return f"{held}, S {'the local keys' if entry.ring else 'all keys'}"


def _kv_pool_bytes(spec: PlanSpec, mesh: AbstractMesh) -> int:
    """K and V pools on one device: pages split over the batch shards of the rollout slots
    (the engine's own rule, `kv_cache.pool_page_axes`), KV heads over tensor."""
    cfg = spec.model
    engine = spec.engine
    shape = (cfg.num_layers, engine.pool_pages, engine.page_size, cfg.num_kv_heads, cfg.head_dim)
    layout = pool_spec(mesh, pool_page_axes(mesh, engine.num_slots), cfg.num_kv_heads)
    local = math.prod(
        size // (1 if axes is None else num_shards(mesh, _as_tuple(axes)))
        for size, axes in zip(shape, layout, strict=True)
    )
    return 2 * local * jnp.dtype(cfg.dtype).itemsize


def analytic_breakdown(
    spec: PlanSpec, attention: str | None = None, rollout: Sequence[Item] = ()
) -> Breakdown:
    """Bytes per device of each part of a train step, and the `rollout` items beside it (those
    of the run's decode layout: `swejax.memory_plan.rollout_items`).

    `attention` overrides the implementation the attention line assumes (default: the model's).
    """
    cfg, mesh = spec.model, abstract_mesh(spec.mesh)
    attention = attention or cfg.attention
    p = jnp.dtype(cfg.param_dtype).itemsize
    c = jnp.dtype(cfg.dtype).itemsize
    params = _param_counts(cfg, mesh)
    rows, seq, L = spec.rows, spec.seq, cfg.num_layers
    weights = params.total * p
    resid = local_elements(("batch", "seq", None), (rows, seq, cfg.hidden_size), mesh) * c
    tokens = local_elements(("batch", "seq"), (rows, seq), mesh)
    vocab_chunk = local_elements(
        ("batch", "seq", "act_vocab"), (rows, min(spec.logits_chunk, seq), cfg.vocab_size), mesh
    )
    head_tables = params.embed_gathered + params.head_gathered
    grads = weights * (1 if spec.micro_batches == 1 else 2)
    items = [
        Item("weights", weights, "state", f"{cfg.param_dtype}, at their sharding"),
        Item("optimizer", 2 * weights, "state", f"AdamW mu and nu in {cfg.param_dtype}"),
        Item(
            "gradients",
            grads,
            "step",
            "one copy" if spec.micro_batches == 1 else "accumulator + this micro-batch's",
        ),
        Item("optimizer update", weights, "update", "the update tree, after the backward pass"),
        Item(
            "gathered layer weights",
            params.layers_gathered * (2 * c + p),
            "step",
            "one layer, data/fsdp gathered: forward and backward copies, its gradient",
        ),
        Item(
            "gathered embedding/head",
            head_tables * 2 * p + params.head_gathered * c,
            "step",
            "fsdp gathered tables and their gradients",
        ),
        Item(
            f"saved activations (remat={cfg.remat})",
            _saved_per_layer(cfg, mesh, rows, seq) * L,
            "step",
            f"{L} layers x per-layer residuals",
        ),
        Item(
            "layer recompute",
            3 * _layer_intermediates(cfg, mesh, rows, seq) // 2,
            "step",
            "one layer's forward in the backward pass, and the cotangents live with it (~1/2)",
        ),
        Item(
            f"attention ({attention})",
            _attention_bytes(cfg, mesh, rows, seq, attention),
            "step",
            _attention_note(attention),
        ),
        Item(
            "residual stream",
            3 * resid + tokens * cfg.head_dim * 4,
            "step",
            "embeddings, the gradient flowing back, rotary tables",
        ),
        Item(
            "output head chunk",
            3 * vocab_chunk * 4 + 2 * resid,
            "step",
            f"float32 logits of {spec.logits_chunk} positions x3, final hidden states x2",
        ),
        Item(
            "batch",
            spec.micro_batches * tokens * sum(jnp.dtype(d).itemsize for d in BATCH_DTYPES.values()),
            "step",
            f"{spec.batch_rows} rows x {seq} tokens, {len(BATCH_FIELDS)} fields",
        ),
    ]
    return Breakdown((*items, *rollout), attention)
