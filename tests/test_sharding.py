"""The mesh from config and the logical-to-mesh rules."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from swejax.sharding import MeshError, activation_mesh, constrain, logical_to_spec, make_mesh


def test_minus_one_takes_the_remaining_devices():
    mesh = make_mesh(data=2, fsdp=-1, tensor=2)
    assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2, "context": 1}


@pytest.mark.parametrize(
    "shape, message",
    [
        (dict(data=3, fsdp=-1), "does not divide 8 devices"),
        (dict(data=2, fsdp=2, tensor=1), "uses 4 devices but 8 are available"),
        (dict(data=-1, fsdp=-1), "at most one mesh axis may be -1"),
        (dict(data=0, fsdp=-1), "must be positive or -1"),
    ],
)
def test_bad_mesh_shapes_name_the_numbers(shape, message):
    with pytest.raises(MeshError, match=message):
        make_mesh(**shape)


def test_axes_that_do_not_divide_a_dimension_are_replicated():
    mesh = make_mesh(fsdp=2, tensor=4)
    # 2 KV heads cannot be split 4 ways: replicated over tensor, hidden still over fsdp.
    assert logical_to_spec(("embed", "kv_heads", "head_dim"), (64, 2, 16), mesh) == P(
        "fsdp", None, None
    )
    assert logical_to_spec(("embed", "heads", "head_dim"), (64, 8, 16), mesh) == P(
        "fsdp", "tensor", None
    )
    # The batch takes data and fsdp together when both divide it.
    mesh = make_mesh(data=2, fsdp=4)
    assert logical_to_spec(("batch", "seq"), (8, 16), mesh) == P(("data", "fsdp"), None)
    assert logical_to_spec(("batch", "seq"), (2, 16), mesh) == P("data", None)
    # Weights are split over fsdp and context together (context parallelism would otherwise
    # multiply the weights and optimizer state per device by the context size).
    mesh = make_mesh(fsdp=2, context=4)
    assert logical_to_spec(("embed", "mlp"), (64, 128), mesh) == P(("fsdp", "context"), None)
    assert logical_to_spec(("batch", "seq"), (2, 16), mesh) == P("fsdp", "context")


def test_constraints_follow_the_mesh_in_context_even_for_a_cached_function():
    mesh = make_mesh(fsdp=8)
    double = jax.jit(lambda x: constrain(2 * x, ("batch", None)))
    x = jnp.ones((8, 4))
    assert double(x).sharding.is_fully_replicated
    with activation_mesh(mesh):
        sharding = double(x).sharding
        assert sharding.spec[0] == "fsdp" and not sharding.is_fully_replicated
    assert double(x).sharding.is_fully_replicated


def test_a_tensor_group_is_consecutive_devices_so_it_stays_on_one_host():
    """On a pod, consecutive devices are one host's: tensor parallelism stays inside a host and
    every batch shard (engine slots, a process's rows) on one host."""
    mesh = make_mesh(fsdp=2, tensor=2, context=2)
    ids = np.vectorize(lambda d: d.id)(mesh.devices)  # [data, fsdp, tensor, context]
    for f in range(2):
        for c in range(2):
            group = sorted(ids[0, f, :, c])
            assert group[1] - group[0] == 1, ids
        assert sorted(ids[0, f].ravel()) == list(range(4 * f, 4 * f + 4)), ids
