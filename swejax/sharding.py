"""The device mesh and the one table that maps logical axis names to mesh axes.

Every weight and activation in swejax is annotated with logical names ("embed", "heads", ...).
`LOGICAL_RULES` says which mesh axes each name is split over; `named_sharding` turns names and a
shape into a `NamedSharding`, replicating any dimension a mesh axis does not divide (for example
8 KV heads on a tensor axis of 16), so one table serves every model size and mesh.

Mesh axes, outermost first:
  data     pure data parallelism (batch split, weights replicated)
  fsdp     batch split and weights sharded (ZeRO-3 style)
  tensor   heads, MLP hidden and vocabulary split (Megatron style)
  context  sequence split (ring attention passes K/V round it); weights sharded over it too,
           with fsdp
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import AbstractMesh, Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor", "context")

# logical name -> mesh axes it is split over (in order). A name absent here is replicated.
LOGICAL_RULES: dict[str, tuple[str, ...]] = {
    # activations
    "batch": ("data", "fsdp"),
    "seq": ("context",),
    "act_heads": ("tensor",),
    "act_kv_heads": ("tensor",),
    "act_mlp": ("tensor",),
    "act_vocab": ("tensor",),
    # weights
    "embed": ("fsdp", "context"),  # weights split over context too: ZeRO-3 over fsdp x context
    "heads": ("tensor",),
    "kv_heads": ("tensor",),
    "mlp": ("tensor",),
    "vocab": ("tensor",),
}


# The mesh axis the sequence is split over: what ring attention passes keys and values round.
(CONTEXT_AXIS,) = LOGICAL_RULES["seq"]


class MeshError(ValueError):
    """A mesh shape that cannot be built from the available devices."""


def resolve_mesh_shape(shape: dict[str, int], num_devices: int) -> dict[str, int]:
    """Fill in the one axis given as -1 so the product equals `num_devices`."""
    unknown = [axis for axis in MESH_AXES if shape.get(axis, 1) == -1]
    bad = [axis for axis in MESH_AXES if shape.get(axis, 1) != -1 and shape.get(axis, 1) < 1]
    described = ",".join(f"{axis}={shape.get(axis, 1)}" for axis in MESH_AXES)
    if bad:
        raise MeshError(f"mesh axis sizes must be positive or -1, got {described}")
    if len(unknown) > 1:
        raise MeshError(f"at most one mesh axis may be -1, got {described}")
    known = math.prod(shape.get(axis, 1) for axis in MESH_AXES if axis not in unknown)
    if num_devices % known:
        raise MeshError(
            f"mesh {described} does not divide {num_devices} devices "
            f"(the fixed axes multiply to {known})"
        )
    resolved = {axis: shape.get(axis, 1) for axis in MESH_AXES}
    if unknown:
        resolved[unknown[0]] = num_devices // known
    elif known != num_devices:
        raise MeshError(
            f"mesh {described} uses {known} devices but {num_devices} are available; "
            "set one axis to -1 to take the rest"
        )
    return resolved


def make_mesh(
    data: int = 1,
    fsdp: int = -1,
    tensor: int = 1,
    context: int = 1,
    devices: Sequence[jax.Device] | None = None,
) -> Mesh:
    """A mesh with axes (data, fsdp, tensor, context); -1 on one axis takes the rest."""
    devices = list(jax.devices() if devices is None else devices)
    sizes = resolve_mesh_shape(
        {"data": data, "fsdp": fsdp, "tensor": tensor, "context": context}, len(devices)
    )
    # Devices are laid out with `tensor` varying fastest, then `context`, then the batch axes:
    # consecutive devices (one host's, on a pod) hold one tensor group, so tensor parallelism
    # stays inside a host and each batch shard (the engine's slots, a process's rows of a
    # batch) sits on one host.
    order = ("data", "fsdp", "context", "tensor")
    shape = tuple(sizes[axis] for axis in order)
    try:
        device_grid = mesh_utils.create_device_mesh(shape, devices=devices)
    except (AssertionError, ValueError, NotImplementedError):
        # Topology-aware placement is only defined for some platforms; fall back to device order.
        device_grid = np.asarray(devices).reshape(shape)
    device_grid = np.transpose(device_grid, [order.index(axis) for axis in MESH_AXES])
    return Mesh(device_grid, MESH_AXES)


def logical_to_spec(
    names: Sequence[str | None],
    shape: Sequence[int] | None = None,
    mesh: Mesh | AbstractMesh | None = None,
) -> PartitionSpec:
    """PartitionSpec for logical `names`; with `shape` and `mesh`, non-dividing axes are dropped.

    A mesh axis is used at most once per array (the first dimension that asks for it wins), and
    axes of size 1 are left out so specs stay readable.
    """
    used: set[str] = set()
    spec: list[str | tuple[str, ...] | None] = []
    for dim, name in enumerate(names):
        axes = []
        size = None if shape is None else shape[dim]
        for axis in LOGICAL_RULES.get(name, ()) if name else ():
            if axis in used:
                continue
            axis_size = 1 if mesh is None else mesh.shape[axis]
            if mesh is not None and axis_size == 1:
                continue
            if (
                mesh is not None
                and size is not None
                and size % (axis_size * math.prod(mesh.shape[a] for a in axes))
            ):
                continue
            axes.append(axis)
        used.update(axes)
        spec.append(None if not axes else axes[0] if len(axes) == 1 else tuple(axes))
    return PartitionSpec(*spec)


def named_sharding(mesh: Mesh, names: Sequence[str | None], shape: Sequence[int]) -> NamedSharding:
    return NamedSharding(mesh, logical_to_spec(names, shape, mesh))


@contextlib.contextmanager
def activation_mesh(mesh: Mesh | None) -> Iterator[None]:
    """Within this context, `constrain` places activations on `mesh` (None: leave them alone).

    This is `jax.set_mesh`, whose mesh is part of jit's cache key, so a function traced without
    a mesh is traced again inside one rather than reusing an unconstrained trace.
    """
    if mesh is None:
        yield
        return
    with jax.set_mesh(mesh):
        yield


def constrain(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
    """Sharding constraint on an activation by logical names (no-op without a mesh in context)."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return x
    return jax.lax.with_sharding_constraint(x, logical_to_spec(names, x.shape, mesh))
