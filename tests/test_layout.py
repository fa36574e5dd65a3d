"""The rollout layout on 8 fake devices: replicas inside hosts, the copy of the weights (values,
shardings, dtype, what is freed), and nothing copied where the layouts coincide."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx

from swejax.models import build_model, preset
from swejax.sampling import LayoutError, SplitWeights, decode_weights, rollout_layout
from swejax.sharding import make_mesh


def _hosts(layout_mesh, host_of) -> list[int]:
    return [host_of(d) for d in layout_mesh.devices.flat]


def test_replicas_keep_tensor_inside_a_host():
    mesh = make_mesh(fsdp=2, tensor=4)

    def by_four(device):
        return device.id // 4

    layout = rollout_layout(mesh, host_of=by_four)
    assert (layout.tensor, layout.replicas, layout.local_replicas) == (4, 2, 1)
    assert _hosts(layout.mesh, by_four) == [0] * 4  # this process plans as host 0
    assert dict(layout.copy_mesh.shape) == {"data": 2, "fsdp": 1, "tensor": 4, "context": 1}
    # Hosts of 2: tensor cut to 2 (gcd with the training mesh's 4), 4 replicas.
    small = rollout_layout(mesh, host_of=lambda d: d.id // 2)
    assert (small.tensor, small.replicas) == (2, 4)
    # Hosts that interleave the training order: each host's devices are grouped instead.
    odd = rollout_layout(mesh, host_of=lambda d: d.id % 2)
    for row in odd.copy_mesh.devices.reshape(-1, odd.tensor):
        assert len({d.id % 2 for d in row}) == 1
    with pytest.raises(LayoutError, match="engine.tensor=3 does not divide the 4 devices"):
        rollout_layout(mesh, tensor=3, host_of=by_four)


def test_the_copy_holds_the_weights_in_the_compute_dtype_layers_apart():
    mesh = make_mesh(fsdp=4, tensor=2)
    model = build_model(preset("tiny", dtype="bfloat16", param_dtype="float32"), mesh, seed=0)
    layout = rollout_layout(mesh)  # one process: its 8 devices as 4 replicas of tensor=2
    weights = decode_weights(model, layout)
    assert weights.copied and isinstance(weights.params, SplitWeights)
    state = nnx.state(model)
    for i, layer in enumerate(weights.params.layers):
        mine = jax.tree.leaves(layer)
        theirs = [np.asarray(a[i]) for a in jax.tree.leaves(state["layers"])]
        for a, b in zip(mine, theirs, strict=True):
            assert a.dtype == np.dtype("bfloat16") and a.sharding.mesh == layout.mesh
            np.testing.assert_array_equal(np.asarray(a), b.astype(a.dtype))
    embed = weights.params.rest["embed"].get_value()
    assert embed.sharding.spec == jax.sharding.PartitionSpec("tensor", None)
    # Of the tiny model's 336,448 weights a device holds 168,384 (vocabulary, heads and MLP
    # split over tensor=2, nothing over the replicas), in bfloat16.
    assert weights.bytes_per_device == 2 * 168_384
    weights.drop()
    assert all(not x.is_deleted() for x in jax.tree.leaves(state)), "the state was freed"


def test_nothing_is_copied_where_the_layouts_coincide():
    mesh = make_mesh(data=8, fsdp=1)  # replicated weights, already as the rollout wants them
    model = build_model(preset("tiny", dtype="float32", param_dtype="float32"), mesh, seed=0)
    weights = decode_weights(model, rollout_layout(mesh))
    assert not weights.copied and weights.bytes_per_device == 0
    for a, b in zip(
        jax.tree.leaves(weights.params), jax.tree.leaves(nnx.state(model)), strict=True
    ):
        assert a.addressable_shards[0].data.unsafe_buffer_pointer() == (
            b.addressable_shards[0].data.unsafe_buffer_pointer()
        )
    weights.drop()
    assert all(not x.is_deleted() for x in jax.tree.leaves(nnx.state(model)))
