"""The rollout layout: the devices decoding runs on, and the copy of the weights it decodes.

Training lays the weights out for the train step: split over fsdp (and context) across hosts,
over tensor inside a host. A decode step reads every weight once for one token per slot, so
decoding over that layout gathers the whole model across hosts at every step (72B on 16 x 8
chips: about 16 GiB per chip per token). The rollout layout instead keeps tensor parallelism
inside a host and makes every other device a replica:

    training   W[D_fsdp, F_tp]   over (data, fsdp, tensor, context), one mesh of every process
    rollout    W[D, F_tp]        over (data = replicas, tensor), each process its own mesh

Each process decodes its own slots on its own replicas (`RolloutLayout.mesh`, its devices only),
so a decode step has no collective across hosts, and processes go at their own pace between
rollouts. Before a phase that samples, `decode_weights` copies the training state once into this
layout in the compute dtype (one reshard over every device, collective); the copy is dropped
before the next train step. Where the layouts coincide (one device, or weights already
replicated as the rollout wants them) nothing is copied: each process's shards are taken as
they are.

Tensor groups are cut from the training mesh's own device order (tensor varies fastest there,
`swejax.sharding.make_mesh`), so the reshard is an all-gather along the batch axes, never a
shuffle; where that order would put a group on two hosts, each host's devices are grouped
instead.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from swejax.models.build import param_shardings
from swejax.sharding import MESH_AXES


class LayoutError(ValueError):
    """A rollout layout that cannot be built on these devices (the message says why)."""


@dataclasses.dataclass(frozen=True)
class RolloutLayout:
    """Where decoding runs: `replicas` x `tensor` devices over all processes.

    `mesh`: this process's replicas (axes MESH_AXES: data = its replicas, tensor; fsdp and
    context 1), what the engine runs on. `copy_mesh`: every process's replicas in one mesh,
    the target of the copy."""

    mesh: Mesh
    copy_mesh: Mesh
    tensor: int

    @property
    def replicas(self) -> int:
        """Replicas over all processes."""
        return self.copy_mesh.shape["data"]

    @property
    def local_replicas(self) -> int:
        return self.mesh.shape["data"]


def default_tensor(train_tensor: int, devices_per_host: int) -> int:
    """The rollout's tensor parallelism: the training mesh's, cut to what one host holds (the
    largest common divisor of the two), so a replica never spans hosts."""
    return math.gcd(train_tensor, devices_per_host)


def rollout_layout(
    train_mesh: Mesh, tensor: int = 0, host_of: Callable[[jax.Device], int] | None = None
) -> RolloutLayout:
    """The rollout layout over the training mesh's devices.

    `tensor`: devices per replica (0: `default_tensor`). `host_of(device)`: its host (default:
    its process), to plan a pod from one process. This process's mesh holds the replicas on
    its host (the first host's when planning for devices it does not have)."""
    devices = _device_order(train_mesh)
    hosts = [(host_of or _process)(d) for d in devices]
    per_host = min(hosts.count(h) for h in set(hosts))
    tensor = tensor or default_tensor(train_mesh.shape["tensor"], per_host)
    if per_host % tensor:
        raise LayoutError(
            f"engine.tensor={tensor} does not divide the {per_host} devices of a host: a "
            "replica must sit on one host"
        )
    if any(len(set(hosts[i : i + tensor])) > 1 for i in range(0, len(hosts), tensor)):
        # The training mesh's order puts a tensor group on two hosts (a topology-aware
        # placement may): group each host's devices, in that order, instead. The reshard then
        # moves more than an all-gather, once per phase.
        order = sorted(range(len(devices)), key=lambda i: (hosts[i], i))
        devices, hosts = [devices[i] for i in order], [hosts[i] for i in order]
    groups = np.asarray(devices, dtype=object).reshape(-1, tensor)
    group_hosts = np.asarray(hosts).reshape(-1, tensor)
    local = jax.local_devices()[0]
    # Planning for devices this process does not have (a TPU slice): the first host's view.
    me = hosts[devices.index(local)] if local in devices else hosts[0]
    mine = groups[group_hosts[:, 0] == me]
    return RolloutLayout(_mesh(mine), _mesh(groups), tensor)


def _process(device: jax.Device) -> int:
    return device.process_index


def _device_order(mesh: Mesh) -> list:
    """The mesh's devices with tensor varying fastest, then context, then the batch axes: the
    order `swejax.sharding.make_mesh` laid them out in."""
    order = ("data", "fsdp", "context", "tensor")
    grid = np.transpose(mesh.devices, [MESH_AXES.index(axis) for axis in order])
    return list(grid.reshape(-1))


def _mesh(groups: np.ndarray) -> Mesh:
    """A mesh over replica groups [replicas, tensor], axes MESH_AXES."""
    replicas, tensor = groups.shape
    return Mesh(groups.reshape(replicas, 1, tensor, 1), MESH_AXES)


# --- the copy of the weights -------------------------------------------------------------------


class SplitWeights(NamedTuple):
    """Weights with every layer's arrays apart (a pytree): what a decode step reads layer by
    layer. Stacked [L, ...] arrays make XLA copy a layer's weights out of the stack at each use
    inside a loop; the decode programs otherwise copy all of them out once per call
    (`Qwen2.split_layer_weights`), one more copy of the weights while a call runs."""

    rest: nnx.State  # the model's state without "layers"
    layers: tuple[nnx.State, ...]  # layer i's weights, shaped like one layer of the stack

    def model_state(self) -> nnx.State:
        """A state to merge the model with: `rest`, and scalar stand-ins for the stacked
        layers, which a program given `layers` never reads."""
        stand_ins = jax.tree.map(lambda a: jnp.zeros((), a.dtype), self.layers[0])
        return nnx.State({**dict(self.rest.items()), "layers": stand_ins})


@dataclasses.dataclass
class DecodeWeights:
    """The weights decoding reads, every array on the layout's mesh (this process's devices)
    in the compute dtype: a `SplitWeights` copy, or the training state's own arrays (a State
    shaped like the model's) where the layouts coincide."""

    params: SplitWeights | nnx.State | None
    copied: bool  # False: the training state's own arrays
    # Of the weights decoding reads on one device, when copied (0 when nothing was): an array
    # the reshard had nothing to do for still counts, though it shares the state's buffers.
    bytes_per_device: int
    seconds: float  # the copy's time, the reshard included
    # The arrays of the copy that hold buffers of their own (an array already as the rollout
    # wants it is the training state's, never freed here).
    owned: list = dataclasses.field(default_factory=list, repr=False)

    def drop(self) -> None:
        """Give the copy's device memory back (before the train step needs it)."""
        for array in self.owned:
            array.delete()
        self.owned, self.params = [], None


def decode_weights(model: nnx.Module, layout: RolloutLayout) -> DecodeWeights:
    """The model's weights in the rollout layout, in the compute dtype (`model.cfg.dtype`):
    copied, its layers apart (`SplitWeights`), where the training state differs in sharding
    or dtype; else the training state's own arrays. Collective where it copies: every process
    calls it with the same model. One array at a time is cast, resharded and split, so the
    copy never holds more than one stacked array beside its result."""
    started = time.perf_counter()
    state = nnx.state(model)
    dtype = jnp.dtype(model.cfg.dtype)
    targets = param_shardings(model, layout.copy_mesh)
    arrays, shardings = jax.tree.leaves(state), jax.tree.leaves(targets)
    same = all(
        a.dtype == dtype and a.sharding.is_equivalent_to(s, a.ndim)
        for a, s in zip(arrays, shardings, strict=True)
    )
    if same:
        local = [
            _on_local_mesh(a, s.spec, layout.mesh) for a, s in zip(arrays, shardings, strict=True)
        ]
        params = jax.tree.unflatten(jax.tree.structure(state), local)
        return DecodeWeights(params, False, 0, time.perf_counter() - started)
    rest, owned = {}, []
    layers: list[dict] = [{} for _ in range(model.cfg.num_layers)]
    target_of = dict(nnx.to_flat_state(targets))
    for path, variable in nnx.to_flat_state(state):
        target, original = target_of[path], variable.get_value()
        target = getattr(target, "value", target)
        array = jax.device_put(_cast(original, dtype), target)
        fresh = not _shares_buffers(array, original)
        if path[0] != "layers":
            local = _on_local_mesh(array, target.spec, layout.mesh)
            rest[path] = variable.replace(local)
            owned += [local] if fresh else []
            continue
        spec = PartitionSpec(*target.spec[1:])
        for i, part in enumerate(_unstack(array, NamedSharding(layout.copy_mesh, spec))):
            layers[i][path[1:]] = variable.replace(_on_local_mesh(part, spec, layout.mesh))
            owned.append(layers[i][path[1:]].get_value())
        if fresh:
            array.delete()
    params = SplitWeights(
        nnx.from_flat_state(rest), tuple(nnx.from_flat_state(layer) for layer in layers)
    )
    jax.block_until_ready(params)
    first = layout.mesh.devices.flat[0]
    copied = sum(_bytes_on(a, first) for a in jax.tree.leaves(params))
    return DecodeWeights(params, True, copied, time.perf_counter() - started, owned)


def _shares_buffers(array: jax.Array, original: jax.Array) -> bool:
    """Whether `array` holds any of `original`'s device buffers (a reshard that had nothing to
    move hands the same buffers back)."""
    mine = {s.data.unsafe_buffer_pointer() for s in array.addressable_shards}
    return any(s.data.unsafe_buffer_pointer() in mine for s in original.addressable_shards)


@functools.cache
def _caster(dtype):
    return jax.jit(lambda x: x.astype(dtype))


def _cast(array: jax.Array, dtype) -> jax.Array:
    """`array` in `dtype`, where it is: the reshard then moves the smaller copy."""
    return array if array.dtype == dtype else _caster(dtype)(array)


def _unstack(array: jax.Array, sharding: NamedSharding) -> list[jax.Array]:
    """A stacked [L, ...] array as L arrays at `sharding`."""
    return _unstacker(sharding, array.shape[0])(array)


@functools.cache
def _unstacker(sharding: NamedSharding, layers: int):
    """One jitted split per layout and depth: every copy after the first reuses it."""
    return jax.jit(lambda x: [x[i] for i in range(layers)], out_shardings=[sharding] * layers)


def _on_local_mesh(array: jax.Array, spec: PartitionSpec, mesh: Mesh) -> jax.Array:
    """`array` (laid out by `spec` over every process's replicas) as an array over this
    process's mesh: its shards on this process's devices, not copied."""
    shards = {shard.device: shard.data for shard in array.addressable_shards}
    return jax.make_array_from_single_device_arrays(
        array.shape, NamedSharding(mesh, spec), [shards[d] for d in mesh.devices.flat]
    )


def _bytes_on(array: jax.Array, device) -> int:
    return sum(s.data.nbytes for s in array.addressable_shards if s.device == device)
