"""The rollout phase on one device: what decoding holds beside the training state, and the KV
pool and slots that fit in the rest (`rollout_items`, `fit_engine`).

While a phase samples, the training state stays where it is (weights and AdamW moments at their
training sharding) and decoding adds, per device:

    rollout layout   the decode copy (every weight in the compute dtype, split over the
                     replica's tensor devices only, each layer's arrays apart), float32 logits
                     and sampling buffers per slot, and the KV pool (where the training state
                     is already laid out and typed as decoding wants it, nothing is copied and
                     each decode call copies the layers out of the stack instead,
                     `engine.split_layer_weights`);
    training layout  the layer slices of the training arrays, one layer and the embedding and
                     head tables gathered over fsdp, logits, and the KV pool.

`fit_engine` gives the pool what is left of the device's memory after these (less a headroom
for the allocator's fragmentation, collectives' buffers and the runtime), and slots for that
pool at the tokens an episode is expected to reach: the same accounting the run sizes its
engine by (`swejax.builder.build_engine`) and the planner reports (`tools/plan_memory.py`).
"""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp

from swejax.config import EngineConfig
from swejax.errors import UserError
from swejax.memory_plan._analytic import (
    GIB,
    Item,
    PlanSpec,
    _param_counts,
    abstract_mesh,
    local_elements,
)
from swejax.models.kv_cache import num_shards, pool_page_axes
from swejax.sampling import default_tensor

HEADROOM = 0.10  # of device memory kept free by a pool sized to fit
_SAMPLING_BUFFERS = 3  # float32 [slots, vocab] buffers live at once: logits, noise, log-softmax


@dataclasses.dataclass(frozen=True)
class DecodeShape:
    """Where a run decodes, as the planner counts it."""

    layout: str  # "rollout" or "training"
    mesh: dict[str, int]  # the decode program's mesh over every device (axis -> size)
    shards: int  # batch shards the slots and pages are split over
    devices_per_host: int

    @property
    def tensor(self) -> int:
        return self.mesh["tensor"]


def decode_shape(spec: PlanSpec, devices_per_host: int) -> DecodeShape:
    """The decode mesh of `spec`'s engine: the rollout layout over the training mesh's devices
    (tensor inside a host, the rest replicas) or the training mesh itself."""
    engine, devices = spec.engine, spec.devices
    if engine.layout == "training":
        mesh = dict(spec.mesh)
        slots = engine.num_slots or devices  # unsized: as if every batch axis divided them
        shards = num_shards(abstract_mesh(mesh), pool_page_axes(abstract_mesh(mesh), slots))
        return DecodeShape("training", mesh, shards, devices_per_host)
    tensor = engine.tensor or default_tensor(spec.mesh["tensor"], devices_per_host)
    if devices_per_host % tensor or devices % tensor:
        raise UserError(
            f"engine.tensor={tensor} does not divide the {devices_per_host} devices of a host"
        )
    mesh = {"data": devices // tensor, "fsdp": 1, "tensor": tensor, "context": 1}
    return DecodeShape("rollout", mesh, devices // tensor, devices_per_host)


def _weights_on(cfg, mesh: dict[str, int]):
    """Weight elements on one device of `mesh` (`_ParamCounts`: `total`, `layers_stacked`)."""
    return _param_counts(cfg, abstract_mesh(mesh))


def state_bytes(spec: PlanSpec, with_optimizer: bool = True) -> int:
    """The training state on one device while a phase samples: the weights at their training
    sharding, and AdamW's two moments beside them when the run trains."""
    weights = _param_counts(spec.model, abstract_mesh(spec.mesh)).total
    return weights * jnp.dtype(spec.model.param_dtype).itemsize * (3 if with_optimizer else 1)


def copies_weights(spec: PlanSpec, shape: DecodeShape) -> bool:
    """Whether the rollout layout copies the weights (a different sharding or dtype)."""
    cfg = spec.model
    same_mesh = all(spec.mesh[a] == shape.mesh[a] for a in ("fsdp", "tensor", "context"))
    return shape.layout == "rollout" and not (same_mesh and cfg.param_dtype == cfg.dtype)


def page_bytes(spec: PlanSpec, shape: DecodeShape) -> int:
    """Bytes of one KV page (k and v, every layer) on one device: KV heads split over the
    decode mesh's tensor axis where they divide."""
    cfg = spec.model
    heads = local_elements(("act_kv_heads",), (cfg.num_kv_heads,), abstract_mesh(shape.mesh))
    per_token = 2 * cfg.num_layers * heads * cfg.head_dim * jnp.dtype(cfg.dtype).itemsize
    return spec.engine.page_size * per_token


def _fixed_items(spec: PlanSpec, shape: DecodeShape) -> list[Item]:
    """What decoding holds per device besides the pool and the per-slot buffers."""
    cfg, engine = spec.model, spec.engine
    c, p = jnp.dtype(cfg.dtype).itemsize, jnp.dtype(cfg.param_dtype).itemsize
    if shape.layout == "rollout" and copies_weights(spec, shape):
        total = _weights_on(cfg, shape.mesh).total
        return [
            Item(
                "decode copy",
                total * c,
                "rollout",
                f"the weights in {cfg.dtype}, layers apart, tensor={shape.tensor} (a replica "
                f"per {shape.tensor} devices); dropped before training",
            )
        ]
    if shape.layout == "rollout":  # the training state is already as decoding wants it
        items, split = [], _weights_on(cfg, shape.mesh).layers_stacked * p
    else:
        params = _param_counts(cfg, abstract_mesh(spec.mesh))
        items = [
            Item(
                "decode gathered weights",
                params.layers_gathered * c + (params.embed_gathered + params.head_gathered) * c,
                "rollout",
                "one layer and the embedding/head tables gathered over fsdp, in the compute dtype",
            )
        ]
        split = params.layers_stacked * p
    if engine.split_layer_weights:
        items.append(
            Item(
                "decode layer-weight copy",
                split,
                "rollout",
                "engine.split_layer_weights: the layers copied once per decode call",
            )
        )
    return items


def _per_slot_bytes(spec: PlanSpec, shape: DecodeShape) -> int:
    """Float32 [vocab] sampling buffers one slot adds on a device (vocabulary over tensor)."""
    vocab = local_elements(("act_vocab",), (spec.model.vocab_size,), abstract_mesh(shape.mesh))
    return _SAMPLING_BUFFERS * vocab * 4


def rollout_items(spec: PlanSpec, shape: DecodeShape) -> list[Item]:
    """Every rollout-phase item of a sized engine (its slots and pages set), per device."""
    engine = spec.engine
    slots_here = math.ceil(engine.num_slots / shape.shards)
    pages_here = engine.pool_pages // shape.shards
    return [
        *_fixed_items(spec, shape),
        Item(
            "decode logits",
            slots_here * _per_slot_bytes(spec, shape),
            "rollout",
            f"{slots_here} slots x float32 [vocab] x {_SAMPLING_BUFFERS}",
        ),
        Item(
            "rollout KV cache",
            pages_here * page_bytes(spec, shape),
            "rollout",
            f"{engine.pool_pages:,} pages of {engine.page_size} over {shape.shards} shards "
            f"({pages_here:,} here), kv heads over tensor={shape.tensor}; released before "
            "training (Engine.release)",
        ),
    ]


def fit_engine(
    spec: PlanSpec,
    shape: DecodeShape,
    state_bytes: int,
    memory_bytes: int | None,
    headroom: float = HEADROOM,
) -> EngineConfig:
    """`spec.engine` with `num_slots` and `num_pages` of 0 resolved. Slots fill the pool at
    `episode_tokens` each. The pool takes what `memory_bytes` (one device's; None: unknown)
    leaves after `state_bytes` (the training state) and the decoding items, less `headroom`;
    with the memory unknown, num_pages=0 keeps its meaning of every slot at full capacity."""
    engine = spec.engine
    pages_per_episode = (engine.episode_tokens or engine.capacity // 2) / engine.page_size
    if engine.num_pages:
        if engine.num_slots:
            return engine
        slots = max(1, int(engine.num_pages // shape.shards / pages_per_episode))
        return dataclasses.replace(engine, num_slots=slots * shape.shards)
    if memory_bytes is None:
        if not engine.num_slots:
            raise UserError(
                "engine.num_slots=0 sizes the slots by the device's memory, which this device "
                "does not report: set engine.memory_gib, engine.num_slots or engine.num_pages"
            )
        return engine
    per_page, per_slot = page_bytes(spec, shape), _per_slot_bytes(spec, shape)
    fixed = state_bytes + sum(item.bytes for item in _fixed_items(spec, shape))
    free = int(memory_bytes * (1 - headroom)) - fixed
    if engine.num_slots:
        slots = math.ceil(engine.num_slots / shape.shards)
    else:
        slots = max(1, int(free / (per_slot + pages_per_episode * per_page)))
    pages = (free - slots * per_slot) // per_page
    if pages < engine.pages_per_slot:
        raise UserError(
            f"{memory_bytes / GIB:.1f} GiB per device leave {max(free, 0) / GIB:.2f} GiB for "
            f"the KV pool after the training state and decoding ({fixed / GIB:.1f} GiB) and "
            f"{headroom:.0%} headroom: less than one sequence of engine.capacity="
            f"{engine.capacity} tokens takes ({engine.pages_per_slot * per_page / GIB:.2f} GiB)"
        )
    return dataclasses.replace(
        engine, num_slots=slots * shape.shards, num_pages=int(pages) * shape.shards
    )
