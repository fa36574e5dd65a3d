# ruff: noqa: E501 (HLO lines are as long as the compilers write them)
"""The collectives read from compiled HLO (`swejax.memory_plan._collectives`): hand-written
snippets for each syntax and structure the parser must follow, then real programs compiled for
the 8 fake CPU devices and, with libtpu, for a 2-host TPU slice: a decode-like loop whose layers
gather their weights inside or across hosts each step."""

from __future__ import annotations

import re
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from swejax.memory_plan._collectives import (
    Collective,
    CollectiveBytes,
    collective_bytes,
    program_collectives,
)
from swejax.tpu_compiler import libtpu_path, tpu_devices

HOSTS_OF_4 = [0, 0, 0, 0, 1, 1, 1, 1]

ADD = """
%add (x: f32[], y: f32[]) -> f32[] {
  %x = f32[] parameter(0)
  %y = f32[] parameter(1)
  ROOT %sum = f32[] add(%x, %y)
}
"""

GROUP_SYNTAXES = (
    "HloModule groups, is_scheduled=true, num_partitions=8\n"
    + ADD
    + """
ENTRY %main (p: bf16[4,16], q: f32[8], r: s8[3,5]) -> bf16[16,16] {
  %p = bf16[4,16]{1,0:T(8,128)(2,1)S(1)} parameter(0)
  %q = f32[8]{0} parameter(1)
  %r = s8[3,5]{1,0} parameter(2)
  %explicit = bf16[16,16]{1,0:T(8,128)(2,1)} all-gather(%p), channel_id=1, replica_groups={{0,1,2,3},{4,5,6,7}}, dimensions={0}, use_global_device_ids=true
  %iota = f32[8]{0} all-reduce(%q), channel_id=2, replica_groups=[4,2]<=[2,4]T(1,0), use_global_device_ids=true, to_apply=%add
  %flat = f32[2]{0} reduce-scatter(%q), channel_id=3, replica_groups=[2,4]<=[8], dimensions={0}, use_global_device_ids=true, to_apply=%add
  %everyone = (f32[8]{0}, s8[3,5]{1,0}) all-reduce(%q, %r), channel_id=4, replica_groups={}, use_global_device_ids=true, to_apply=%add
  %transposed = f32[8]{0} all-reduce(%q), channel_id=5, replica_groups=mesh['axis_0'=1,'axis_1'=4,'axis_2'=2], device_ids=([2,4]T(1,0)) {'axis_1'}, use_global_device_ids=true, to_apply=%add
  %sub_axis = f32[8]{0} all-to-all(%q), channel_id=6, replica_groups=mesh['a'=8] {'a':(2)2}, dimensions={0}
  %listed = f32[8]{0} all-reduce(%q), channel_id=7, replica_groups=mesh['x'=4,'y'=2], device_ids=(6,3,0,1,5,2,7,4) {'y'}, use_global_device_ids=true, to_apply=%add
  %both = f32[8]{0} all-reduce(%q), channel_id=8, replica_groups=mesh['a'=2,'b'=4] {'a','b'}, use_global_device_ids=true, to_apply=%add
  ROOT %unwritten = f32[8]{0} all-reduce(%q), channel_id=9, to_apply=%add, metadata={op_name="jit(f)/replica_groups={{0,1}}"}
}
"""
)


def test_group_syntaxes_dtypes_and_tuples():
    found = program_collectives(GROUP_SYNTAXES)
    halves = ((0, 1, 2, 3), (4, 5, 6, 7))
    everyone = (tuple(range(8)),)
    assert found == [
        # bf16 16x16; the layout and memory space after the shape are no elements.
        Collective("all-gather", 512, halves, 1, False),
        # [4,2]<=[2,4]T(1,0): arange(8) as 2x4, transposed, as 4 groups of 2.
        Collective("all-reduce", 32, ((0, 4), (1, 5), (2, 6), (3, 7)), 1, False),
        Collective("reduce-scatter", 8, halves, 1, False),
        # A tuple result: f32[8] and s8[3,5] together; {} is every partition.
        Collective("all-reduce", 32 + 15, everyone, 1, False),
        # Mesh [1,4,2] over devices 0,4,1,5,2,6,3,7, grouped along its 4-long axis.
        Collective("all-reduce", 32, halves, 1, False),
        # Sub-axis (2)2 of an 8-long axis: the middle factor of [2,2,2].
        Collective("all-to-all", 32, ((0, 2), (1, 3), (4, 6), (5, 7)), 1, False),
        Collective("all-reduce", 32, ((6, 3), (0, 1), (5, 2), (7, 4)), 1, False),
        Collective("all-reduce", 32, everyone, 1, False),
        # No groups written (what metadata strings say is no attribute): every partition.
        Collective("all-reduce", 32, everyone, 1, False),
    ]


ASYNC = (
    "HloModule async, num_partitions=4\n"
    + ADD
    + """
%wrapped_reduce_scatter (param_0: f32[16]) -> f32[4] {
  %param_0 = f32[16]{0} parameter(0)
  ROOT %reduce-scatter.1 = f32[4]{0} reduce-scatter(%param_0), channel_id=3, replica_groups={{0,1,2,3}}, dimensions={0}, to_apply=%add
}

ENTRY %main (p: f32[4]) -> f32[4] {
  %p = f32[4]{0} parameter(0)
  %ag-start = (f32[4]{0}, f32[16]{0}) all-gather-start(%p), channel_id=1, replica_groups={{0,1,2,3}}, dimensions={0}, use_global_device_ids=true
  %ag-done = f32[16]{0} all-gather-done(%ag-start)
  %ar-start = f32[16]{0} all-reduce-start(%ag-done), channel_id=2, replica_groups={{0,1},{2,3}}, to_apply=%add
  %ar-done = f32[16]{0} all-reduce-done(%ar-start)
  %rs-start = ((f32[16]{0}), f32[4]{0}, u32[]{:S(2)}) async-start(%ar-done), calls=%wrapped_reduce_scatter
  %rs-update = ((f32[16]{0}), f32[4]{0}, u32[]{:S(2)}) async-update(%rs-start), calls=%wrapped_reduce_scatter
  %rs-done = f32[4]{0} async-done(%rs-update), calls=%wrapped_reduce_scatter
  %cp-start = (f32[4]{0:S(1)}, f32[4]{0}, u32[]{:S(2)}, u32[]{:S(2)}) collective-permute-start(%rs-done), channel_id=4, source_target_pairs={{0,1},{1,2},{2,3},{3,0}}
  ROOT %cp-done = f32[4]{0} collective-permute-done(%cp-start)
}
"""
)


def test_async_pairs_count_once_at_their_output():
    # A -start's tuple holds its input buffer too (the TPU's collective-permute-start also
    # two u32 flags): the result is the -done's shape. async-start/update/done run the
    # reduce-scatter of their computation once.
    assert program_collectives(ASYNC) == [
        Collective("all-gather", 64, ((0, 1, 2, 3),), 1, False),
        Collective("all-reduce", 64, ((0, 1), (2, 3)), 1, False),
        Collective("reduce-scatter", 16, ((0, 1, 2, 3),), 1, False),
        Collective("collective-permute", 16, ((0, 1), (1, 2), (2, 3), (3, 0)), 1, False),
    ]


def test_an_async_start_without_its_done_is_refused():
    text = ASYNC.replace("ROOT %cp-done = f32[4]{0} collective-permute-done(%cp-start)", "")
    text = text.replace("%cp-start =", "ROOT %cp-start =")
    with pytest.raises(ValueError, match="no -done"):
        program_collectives(text)


LAYER_LOOP = """
%layer_body (p: (s32[], f32[4])) -> (s32[], f32[4]) {
  %p = (s32[], f32[4]{0}) parameter(0)
  %i = s32[] get-tuple-element(%p), index=0
  %i.copy = s32[] copy(%i)
  %one = s32[] constant(1)
  %next = s32[] add(%i.copy, %one)
  %x = f32[4]{0} get-tuple-element(%p), index=1
  %gathered = f32[16]{0} all-gather(%x), channel_id=1, replica_groups=[2,4]<=[8], dimensions={0}, use_global_device_ids=true
  %slice = f32[4]{0} slice(%gathered), slice={[0:4]}
  ROOT %t = (s32[], f32[4]{0}) tuple(%next, %slice)
}

%layer_cond (p: (s32[], f32[4])) -> pred[] {
  %p = (s32[], f32[4]{0}) parameter(0)
  %n = s32[] constant(80)
  %i = s32[] get-tuple-element(%p), index=0
  ROOT %lt = pred[] compare(%i, %n), direction=LT
}
"""

DECODE = (
    "HloModule decode, num_partitions=8\n"
    + ADD
    + LAYER_LOOP
    + """
%step_body (p: (s32[], f32[4])) -> (s32[], f32[4]) {
  %p = (s32[], f32[4]{0}) parameter(0)
  %t = s32[] get-tuple-element(%p), index=0
  %x = f32[4]{0} get-tuple-element(%p), index=1
  %zero = s32[] constant(0)
  %zero.copy = s32[] copy(%zero)
  %init = (s32[], f32[4]{0}) tuple(%zero.copy, %x)
  %layers = (s32[], f32[4]{0}) while(%init), condition=%layer_cond, body=%layer_body, backend_config={"known_trip_count":{"n":"80"}}
  %y = f32[4]{0} get-tuple-element(%layers), index=1
  ROOT %out = (s32[], f32[4]{0}) tuple(%t, %y)
}

%step_cond (p: (s32[], f32[4])) -> pred[] {
  %p = (s32[], f32[4]{0}) parameter(0)
  %x = f32[4]{0} get-tuple-element(%p), index=1
  %c0 = f32[] constant(0)
  %s = f32[] reduce(%x, %c0), dimensions={0}, to_apply=%add
  %total = f32[] all-reduce(%s), channel_id=2, replica_groups={{0,4},{1,5},{2,6},{3,7}}, use_global_device_ids=true, to_apply=%add
  %limit = f32[] constant(100)
  ROOT %lt = pred[] compare(%total, %limit), direction=LT
}

ENTRY %main (x: f32[4]) -> (s32[], f32[4]) {
  %x = f32[4]{0} parameter(0)
  %once = f32[32]{0} all-gather(%x), channel_id=3, replica_groups={{0,1,2,3,4,5,6,7}}, dimensions={0}, use_global_device_ids=true
  %zero = s32[] constant(0)
  %init = (s32[], f32[4]{0}) tuple(%zero, %x)
  ROOT %decode = (s32[], f32[4]{0}) while(%init), condition=%step_cond, body=%step_body
}
"""
)


def test_main_loop_and_a_counted_loop_inside_it():
    found = program_collectives(DECODE)
    assert found == [
        Collective("all-gather", 128, (tuple(range(8)),), 1, False),  # before the loop
        Collective("all-gather", 64, ((0, 1, 2, 3), (4, 5, 6, 7)), 80, True),  # x 80 layers
        Collective("all-reduce", 4, ((0, 4), (1, 5), (2, 6), (3, 7)), 1, True),  # condition
    ]
    assert collective_bytes(DECODE, HOSTS_OF_4) == CollectiveBytes(
        per_call_within_host=0,
        per_call_across_hosts=128,
        per_step_within_host=80 * 64,
        per_step_across_hosts=4,
        ops={"all-gather": 128 + 80 * 64, "all-reduce": 4},
    )
    # The TPU compiler writes no trip count: it is read off the counter (from 0 by 1 to 80).
    unannotated = DECODE.replace(', backend_config={"known_trip_count":{"n":"80"}}', "")
    assert program_collectives(unannotated) == found
    # A counter that does not start at a constant counts once: the loop's length is unknown.
    unknown_start = unannotated.replace("tuple(%zero.copy, %x)", "tuple(%t, %x)")
    assert [c.executions for c in program_collectives(unknown_start)] == [1, 1, 1]


def test_without_an_open_ended_loop_everything_is_per_call():
    counted = DECODE.replace(
        "condition=%step_cond, body=%step_body", "condition=%layer_cond, body=%layer_body"
    )
    assert collective_bytes(counted, HOSTS_OF_4) == CollectiveBytes(
        per_call_within_host=80 * 64,
        per_call_across_hosts=128,
        per_step_within_host=0,
        per_step_across_hosts=0,
        ops={"all-gather": 128 + 80 * 64},
    )


def test_two_open_ended_loops_in_entry_are_refused():
    text = DECODE.replace(
        "  ROOT %decode",
        "  %other = (s32[], f32[4]{0}) while(%init), condition=%step_cond, body=%step_body\n"
        "  ROOT %decode",
    )
    with pytest.raises(ValueError, match="several while loops"):
        program_collectives(text)


CALLS = (
    "HloModule calls, num_partitions=4\n"
    + ADD
    + """
%called (x: f32[8]) -> f32[8] {
  %x = f32[8]{0} parameter(0)
  ROOT %r = f32[8]{0} all-reduce(%x), channel_id=1, replica_groups={{0,1},{2,3}}, to_apply=%add
}

%fused (x: f32[8]) -> f32[8] {
  %x = f32[8]{0} parameter(0)
  ROOT %r = f32[8]{0} all-reduce(%x), channel_id=2, replica_groups={{0,2},{1,3}}, to_apply=%add
}

%small (x: f32[8]) -> f32[8] {
  %x = f32[8]{0} parameter(0)
  %s = f32[2]{0} slice(%x), slice={[0:2]}
  %p = f32[2]{0} collective-permute(%s), channel_id=3, source_target_pairs={{0,1},{1,0}}
  %zero = f32[] constant(0)
  ROOT %pad = f32[8]{0} pad(%p, %zero), padding=0_6
}

%large (x: f32[8]) -> f32[8] {
  %x = f32[8]{0} parameter(0)
  %s = f32[2]{0} slice(%x), slice={[0:2]}
  ROOT %g = f32[8]{0} all-gather(%s), channel_id=4, replica_groups={{0,1,2,3}}, dimensions={0}
}

ENTRY %main (x: f32[8], b: s32[]) -> f32[8] {
  %x = f32[8]{0} parameter(0)
  %b = s32[] parameter(1)
  %c = f32[8]{0} call(%x), to_apply=%called
  %f = f32[8]{0} fusion(%c), kind=kCustom, calls=%fused
  ROOT %pick = f32[8]{0} conditional(%b, %f, %f), branch_computations={%small, %large}
}
"""
)


def test_calls_fusions_and_the_largest_branch():
    assert program_collectives(CALLS) == [
        Collective("all-reduce", 32, ((0, 1), (2, 3)), 1, False),
        Collective("all-reduce", 32, ((0, 2), (1, 3)), 1, False),
        Collective("all-gather", 32, ((0, 1, 2, 3),), 1, False),  # not the 8-byte permute
    ]
    cross = collective_bytes(CALLS, [0, 0, 1, 1])
    assert (cross.per_call_within_host, cross.per_call_across_hosts) == (32, 64)


@pytest.mark.parametrize(
    "text, message",
    [
        ("HloModule m\n", "no ENTRY"),
        ("ENTRY %main () -> f32[] {\n}", "no HloModule"),
        (GROUP_SYNTAXES.replace("replica_groups=[2,4]<=[8]", "replica_groups=weird"), "weird"),
        (ASYNC.replace("%ar-done = f32[16]{0}", "%ar-done = q7[16]{0}"), "q7"),
        (CALLS.replace("%x = f32[8]{0} parameter(0)", "%x = parameter(0)"), "cannot read HLO"),
    ],
)
def test_unreadable_text_is_refused(text, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        program_collectives(text)


def test_groups_beyond_the_hosts_given_are_refused():
    with pytest.raises(ValueError, match="only 4 hosts given"):
        collective_bytes(DECODE, HOSTS_OF_4[:4])


# ---- real programs --------------------------------------------------------------------------

D, LAYERS = 16, 3
WITHIN = [0, 1, 2, 3, 4, 5, 6, 7]  # mesh rows: devices 0-3 and 4-7, one host each
ACROSS = [0, 1, 4, 5, 2, 3, 6, 7]  # mesh rows: 0,1,4,5 and 2,3,6,7, each on both hosts


def _mesh(devices, order) -> Mesh:
    return Mesh(np.array([devices[i] for i in order]).reshape(2, 4), ("data", "model"))


def _decode_like(mesh: Mesh, weights: P, permute: bool = False) -> str:
    """A while_loop of data-dependent length (the decode loop) over a scan of LAYERS layers,
    each a matmul with its layer's [D, D] float32 weights, gathered whole first. The weights
    are carried and updated every step: nothing about them is loop-invariant. The CPU compiler
    gathers each layer's slice (f32[1,16,16]) inside the scan; `permute` adds a ppermute of
    the activations over "model" to each layer (the TPU compiler makes it async)."""
    whole = NamedSharding(mesh, P())

    def layer(x, w):
        x = jnp.tanh(x @ jax.lax.with_sharding_constraint(w, whole))
        if permute:
            shift = [(i, (i + 1) % 4) for i in range(4)]
            rotate = partial(jax.lax.ppermute, axis_name="model", perm=shift)
            x = jax.shard_map(
                rotate, mesh=mesh, in_specs=P("data"), out_specs=P("data"), check_vma=False
            )(x)
        return x, None

    def step(carry):
        ws, x = carry
        x, _ = jax.lax.scan(layer, x, ws)
        return ws * 1.01, x

    def going(carry):  # a sum over the "data" rows of x: one f32 all-reduce per check
        return jnp.sum(carry[1]) < 1000.0

    ws = jax.ShapeDtypeStruct((LAYERS, D, D), jnp.float32, sharding=NamedSharding(mesh, weights))
    x = jax.ShapeDtypeStruct((8, D), jnp.float32, sharding=NamedSharding(mesh, P("data")))
    loop = jax.jit(lambda ws, x: jax.lax.while_loop(going, step, (ws, x)))
    return loop.lower(ws, x).compile().as_text()


def _hosts_by_id(mesh: Mesh) -> list[int]:
    return [d.id // 4 for d in mesh.devices.flat]  # fake CPU devices, 4 to a "host"


GATHERS = LAYERS * D * D * 4  # per step: each layer's whole weights, f32
CHECK = 4  # the condition's f32 all-reduce


@pytest.mark.parametrize("order", [WITHIN, ACROSS])
def test_sharded_weights_are_gathered_per_step(order):
    mesh = _mesh(jax.devices(), order)
    text = _decode_like(mesh, P(None, None, "model"))
    gathers = [c for c in program_collectives(text) if c.op == "all-gather"]
    # Partition ids are mesh positions: the groups are the mesh's rows whatever devices hold them.
    assert gathers == [Collective("all-gather", D * D * 4, ((0, 1, 2, 3), (4, 5, 6, 7)), 3, True)]
    found = collective_bytes(text, _hosts_by_id(mesh))
    # The "data" pairs of the check are columns: across hosts when the rows are not.
    per_step = (GATHERS, CHECK) if order == WITHIN else (CHECK, GATHERS)
    assert (found.per_step_within_host, found.per_step_across_hosts) == per_step
    assert (found.per_call_within_host, found.per_call_across_hosts) == (0, 0)
    assert found.ops == {"all-gather": GATHERS, "all-reduce": CHECK}
    # Without the CPU compiler's trip counts the scan's is read off its counter.
    bare = re.sub(r'"known_trip_count":\{"n":"\d+"\}', '"other":{}', text)
    assert bare != text and collective_bytes(bare, _hosts_by_id(mesh)) == found


def test_replicated_weights_move_nothing_but_the_check():
    mesh = _mesh(jax.devices(), WITHIN)
    found = collective_bytes(_decode_like(mesh, P()), _hosts_by_id(mesh))
    assert found == CollectiveBytes(0, 0, 0, CHECK, {"all-reduce": CHECK})


def test_a_loop_invariant_weight_is_gathered_once_per_call():
    # One weight for every layer and step, not carried: the CPU compiler hoists its gather out
    # of both loops into the entry computation.
    mesh = _mesh(jax.devices(), WITHIN)

    def decode(w, x):
        def step(x):
            whole = jax.lax.with_sharding_constraint(w, NamedSharding(mesh, P()))
            layer = lambda x, _: (jnp.tanh(x @ whole), None)
            return jax.lax.scan(layer, x, None, length=LAYERS)[0]

        return jax.lax.while_loop(lambda x: jnp.sum(x) < 1000.0, step, x)

    w = jax.ShapeDtypeStruct((D, D), jnp.float32, sharding=NamedSharding(mesh, P(None, "model")))
    x = jax.ShapeDtypeStruct((8, D), jnp.float32, sharding=NamedSharding(mesh, P("data")))
    text = jax.jit(decode).lower(w, x).compile().as_text()
    found = collective_bytes(text, _hosts_by_id(mesh))
    assert found == CollectiveBytes(
        D * D * 4, 0, 0, CHECK, {"all-gather": D * D * 4, "all-reduce": 4}
    )


@pytest.mark.parametrize("axis", [0, 1])
def test_partition_i_is_the_meshs_ith_device(axis):
    # A mesh over the devices out of order: the groups of a sum over one mesh axis, mapped
    # through mesh.devices.flat, are that axis's lines of devices, and running the program
    # gives each device the sum over exactly its group.
    devices = jax.devices()
    mesh = Mesh(np.array([devices[i] for i in [3, 6, 0, 5, 1, 7, 2, 4]]).reshape(2, 4), ("a", "b"))
    sharding = NamedSharding(mesh, P("a", "b"))
    values = jax.make_array_from_callback(
        (2, 4),
        sharding,
        lambda index: np.full((1, 1), 2 ** mesh.devices[index].item().id, np.int32),
    )
    total = jax.jit(lambda v: jnp.sum(v, axis=axis))
    (collective,) = program_collectives(total.lower(values).compile().as_text())
    groups = [[mesh.devices.flat[p] for p in group] for group in collective.groups]
    ids = lambda devices: sorted(d.id for d in devices)
    lines = mesh.devices.T if axis == 0 else mesh.devices
    assert sorted(map(ids, groups)) == sorted(map(ids, lines))
    group_of = {d: group for group in groups for d in group}
    for shard in total(values).addressable_shards:
        assert int(shard.data[0]) == sum(2**d.id for d in group_of[shard.device])


@pytest.mark.tpu
@pytest.mark.skipif(libtpu_path() is None, reason="no TPU compiler (libtpu): tools/setup.sh")
@pytest.mark.parametrize("order", [WITHIN, ACROSS])
def test_tpu_collectives_and_their_hosts(order):
    # v5p:2x2x2 is 8 chips on 2 hosts, 4 each. The TPU compiler writes no trip counts and makes
    # the permute asynchronous (collective-permute-start/-done); the gathers and all-reduce stay
    # synchronous.
    mesh = _mesh(tpu_devices("v5p:2x2x2"), order)
    hosts = [d.process_index for d in mesh.devices.flat]
    assert sorted(hosts) == HOSTS_OF_4
    text = _decode_like(mesh, P(None, None, "model"), permute=True)
    assert "collective-permute-start" in text
    found = program_collectives(text)
    shift = ((0, 1), (1, 2), (2, 3), (3, 0), (4, 5), (5, 6), (6, 7), (7, 4))
    rows = ((0, 1, 2, 3), (4, 5, 6, 7))
    assert sorted(found, key=lambda c: c.op) == [
        Collective("all-gather", D * D * 4, rows, 3, True),
        Collective("all-reduce", CHECK, ((0, 4), (1, 5), (2, 6), (3, 7)), 1, True),
        Collective("collective-permute", 4 * D * 4, shift, 3, True),  # x's [4, D] rows
    ]
    moved = collective_bytes(text, hosts)
    per_layer = LAYERS * (D * D * 4 + 4 * D * 4)
    expected = (per_layer, CHECK) if order == WITHIN else (CHECK, per_layer)
    assert (moved.per_step_within_host, moved.per_step_across_hosts) == expected
    assert moved.per_call_within_host == moved.per_call_across_hosts == 0
