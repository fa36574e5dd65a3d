"""Ring attention and its block contract against the reference attention, on 8 fake devices.

Outputs and gradients (dq, dk, dv) in float32 with causal and non-causal masks, packed segments
and grouped-query heads; the sequence split 8 ways, 4 ways with the batch split 2 ways, and with
heads split too; then the Qwen2 model with attention="ring_reference" against the unsharded one.
"""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from swejax.models import ATTENTION_IMPLS, abstract_model, build_model, place_state, preset
from swejax.models.attention import check_attention, pallas_interpreter
from swejax.sharding import activation_mesh, make_mesh
from swejax_kernels.blockwise import block_backward, block_forward
from swejax_kernels.reference import attention
from swejax_kernels.ring import from_zigzag, ring_attention, to_zigzag

# float32 attention over at most 64 keys of unit-scale values: rounding differences stay near
# 1e-6; a wrong mask or a lost block moves results by 1e-2 or more.
TOL = dict(rtol=1e-5, atol=1e-5)
MODEL_TOL = 1e-4  # logits, as in test_model.py


def _qkv(seed, batch, q_len, kv_len, heads, kv_heads, head_dim=8):
    keys = jax.random.split(jax.random.key(seed), 4)
    q = jax.random.normal(keys[0], (batch, q_len, heads, head_dim))
    k = jax.random.normal(keys[1], (batch, kv_len, kv_heads, head_dim))
    v = jax.random.normal(keys[2], (batch, kv_len, kv_heads, head_dim))
    dout = jax.random.normal(keys[3], q.shape)
    return q, k, v, dout


def _segments(seed, batch, length, count=3):
    """Sorted segment ids per row (packed sequences), each row starting a new segment."""
    ids = np.sort(np.random.default_rng(seed).integers(0, count, (batch, length)), axis=1)
    return jnp.asarray(ids, jnp.int32)


def _assert_close(actual, expected, what):
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), err_msg=what, **TOL)


# --- the block contract -----------------------------------------------------------------------


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("segmented", [False, True])
@pytest.mark.slow
def test_block_pair_matches_reference_vjp(causal, segmented):
    # 6 queries over 10 keys (causal: the last 6 positions), 4 query heads on 2 kv heads.
    q, k, v, dout = _qkv(0, 2, 6, 10, 4, 2)
    q_seg = kv_seg = None
    if segmented:
        kv_seg = _segments(1, 2, 10)
        q_seg = kv_seg[:, -6:]

    def ref(q, k, v):
        if not segmented:
            return attention(q, k, v, causal=causal)
        # The reference takes one segment row (T == S); pad queries to the keys' length.
        pad = jnp.zeros((q.shape[0], 4, *q.shape[2:]), q.dtype)
        full = attention(jnp.concatenate([pad, q], 1), k, v, causal=causal, segment_ids=kv_seg)
        return full[:, 4:]

    expected, vjp = jax.vjp(ref, q, k, v)
    out, lse = block_forward(q, k, v, causal=causal, q_segment_ids=q_seg, kv_segment_ids=kv_seg)
    _assert_close(out, expected, "out")
    grads = block_backward(
        q, k, v, out, lse, dout, causal=causal, q_segment_ids=q_seg, kv_segment_ids=kv_seg
    )
    for name, got, want in zip(("dq", "dk", "dv"), grads, vjp(dout), strict=True):
        _assert_close(got, want, name)


def test_block_lse_is_the_logsumexp_of_scaled_logits():
    q, k, v, _ = _qkv(2, 1, 5, 5, 2, 1)
    _, lse = block_forward(q, k, v, causal=False)
    logits = jnp.einsum("BTNH,BSH->BNTS", q, k[:, :, 0]) / np.sqrt(q.shape[-1])
    _assert_close(lse, jax.nn.logsumexp(logits, axis=-1), "lse")


def test_block_rows_that_see_no_key_give_zero_and_minus_inf_without_nan():
    q, k, v, dout = _qkv(3, 1, 4, 4, 2, 2)
    q_seg = jnp.array([[1, 1, 2, 2]], jnp.int32)
    kv_seg = jnp.array([[1, 1, 1, 1]], jnp.int32)  # queries of segment 2 see nothing
    out, lse = block_forward(q, k, v, causal=False, q_segment_ids=q_seg, kv_segment_ids=kv_seg)
    assert np.all(np.asarray(out[:, 2:]) == 0.0)
    assert np.all(np.isneginf(np.asarray(lse[:, :, 2:])))
    assert np.all(np.isfinite(np.asarray(lse[:, :, :2])))
    grads = block_backward(
        q, k, v, out, lse, dout, causal=False, q_segment_ids=q_seg, kv_segment_ids=kv_seg
    )
    for grad in grads:
        assert np.all(np.isfinite(np.asarray(grad)))
    assert np.all(np.asarray(grads[0][:, 2:]) == 0.0)


# --- ring attention ---------------------------------------------------------------------------

RING_CASES = {
    # name: mesh, causal, segmented
    "context8_causal_segments": (dict(context=8, fsdp=1), True, True),
    "context8_full": (dict(context=8, fsdp=1), False, False),
    "context4_fsdp2_causal": (dict(context=4, fsdp=2), True, False),
    "context4_fsdp2_full_segments": (dict(context=4, fsdp=2), False, True),
    "context2_fsdp2_tensor2_causal_segments": (dict(context=2, fsdp=2, tensor=2), True, True),
    "context1_fsdp8_causal_segments": (dict(context=1, fsdp=8), True, True),
}


@pytest.mark.parametrize("case", sorted(RING_CASES))
@pytest.mark.slow
def test_ring_matches_reference(case):
    mesh_shape, causal, segmented = RING_CASES[case]
    mesh = make_mesh(**mesh_shape)
    batch, length = 8, 32  # 8 / 2 = 4 zigzag chunks of 2 keys on context=8
    q, k, v, dout = _qkv(4, batch, length, length, 4, 2)
    segments = _segments(5, batch, length) if segmented else None
    # Inputs placed as the model places activations: batch over fsdp, sequence over context.
    spec = P(
        "fsdp" if mesh.shape["fsdp"] > 1 else None, "context" if mesh.shape["context"] > 1 else None
    )
    q, k, v, dout = (jax.device_put(x, NamedSharding(mesh, spec)) for x in (q, k, v, dout))

    @jax.jit
    def ring_and_grads(q, k, v, dout):
        def ring(q, k, v):
            return ring_attention(q, k, v, mesh=mesh, causal=causal, segment_ids=segments)

        out, vjp = jax.vjp(ring, q, k, v)
        return out, vjp(dout)

    out, grads = ring_and_grads(q, k, v, dout)
    if mesh.shape["context"] > 1:
        assert not out.sharding.is_fully_replicated
    expected, vjp = jax.vjp(
        lambda q, k, v: attention(q, k, v, causal=causal, segment_ids=segments), q, k, v
    )
    _assert_close(out, expected, f"{case}: out")
    for name, got, want in zip(("dq", "dk", "dv"), grads, vjp(dout), strict=True):
        _assert_close(got, want, f"{case}: {name}")


def test_zigzag_order_puts_chunks_r_and_2n_minus_1_minus_r_on_device_r():
    mesh = make_mesh(context=4, fsdp=2)
    tokens = jnp.broadcast_to(jnp.arange(16, dtype=jnp.int32), (2, 16))  # 8 chunks of 2
    zigzag = jax.jit(lambda x: to_zigzag(x, mesh=mesh))(tokens)
    chunks = [0, 7, 1, 6, 2, 5, 3, 4]  # device 0 holds chunks 0 and 7, device 1 1 and 6, ...
    expected = np.concatenate([np.arange(2 * c, 2 * c + 2) for c in chunks])
    np.testing.assert_array_equal(np.asarray(zigzag), np.broadcast_to(expected, (2, 16)))
    back = jax.jit(lambda x: from_zigzag(x, mesh=mesh))(zigzag)
    np.testing.assert_array_equal(np.asarray(back), np.asarray(tokens))
    assert to_zigzag(tokens, mesh=None) is tokens  # no ring: nothing to do


@pytest.mark.slow
def test_ring_on_inputs_already_in_zigzag_order():
    """What the model does: permute once, attend with zigzagged=True, permute the output back;
    outputs and gradients equal the reference's."""
    mesh = make_mesh(context=4, fsdp=2)
    q, k, v, dout = _qkv(12, 4, 32, 32, 4, 2)
    segments = _segments(13, 4, 32)

    @jax.jit
    def ring_and_grads(q, k, v, dout):
        def ring(q, k, v):
            zig = functools.partial(to_zigzag, mesh=mesh)
            out = ring_attention(
                zig(q), zig(k), zig(v), mesh=mesh, segment_ids=zig(segments), zigzagged=True
            )
            return from_zigzag(out, mesh=mesh)

        out, vjp = jax.vjp(ring, q, k, v)
        return out, vjp(dout)

    out, grads = ring_and_grads(q, k, v, dout)
    expected, vjp = jax.vjp(lambda q, k, v: attention(q, k, v, segment_ids=segments), q, k, v)
    _assert_close(out, expected, "out")
    for name, got, want in zip(("dq", "dk", "dv"), grads, vjp(dout), strict=True):
        _assert_close(got, want, name)


@pytest.mark.slow
def test_the_model_reorders_tokens_once_not_in_every_layer():
    """With the ring on context=4, the compiled model gradient passes only K/V blocks (and the
    dK/dV sums) between devices inside the layers: no collective moves a query-shaped or
    output-shaped array, which a per-layer zigzag reorder would (8 query heads of 16 on 1 KV
    head, so they are told apart by shape)."""
    cfg = preset("tiny", vocab_size=128, num_layers=2, hidden_size=128, num_heads=8, num_kv_heads=1)
    mesh = make_mesh(context=4, fsdp=2)
    model = place_state(build_model(cfg.replace(attention="ring_reference"), seed=0), mesh)
    graphdef, state = nnx.split(model)
    ids = np.zeros((2, 256), np.int32)
    positions = np.broadcast_to(np.arange(256, dtype=np.int32), (2, 256))

    def loss(state):
        logits = nnx.merge(graphdef, state)(ids, positions, np.ones_like(ids))
        return jnp.sum(logits)

    with activation_mesh(mesh):
        text = jax.jit(jax.grad(loss)).lower(state).compile().as_text()
    shapes = re.findall(r"= \w+\[([\d,]*)\]\S* collective-permute(?:-start)?\(", text)
    # Local shapes: 1 row, 64 of 256 tokens per device; a K/V block [1, 64, 1, 16].
    assert "1,64,1,16" in shapes, "the ring's K/V shifts"
    assert not [s for s in shapes if s.endswith(",8,16")], f"query-shaped permutes: {shapes}"


@pytest.mark.slow
def test_ring_without_a_mesh_is_blockwise_attention():
    q, k, v, _ = _qkv(6, 2, 12, 12, 4, 1)
    segments = _segments(7, 2, 12)
    out = ring_attention(q, k, v, mesh=None, segment_ids=segments)
    _assert_close(out, attention(q, k, v, segment_ids=segments), "out")


def test_ring_rejects_a_length_the_zigzag_cannot_split():
    mesh = make_mesh(context=4, fsdp=2)
    q, k, v, _ = _qkv(8, 2, 12, 12, 2, 2)  # 12 is not a multiple of 2 x 4 chunks
    with pytest.raises(ValueError, match="multiple of 8 chunks"):
        ring_attention(q, k, v, mesh=mesh)


# --- dispatch ---------------------------------------------------------------------------------


@pytest.mark.parametrize("impl", ["flash", "ring", "cudnn"])
def test_kernels_that_cannot_run_on_cpu_say_so_at_build(impl):
    with pytest.raises(ValueError, match=f"attention='{impl}' runs on .*not on 'cpu'"):
        build_model(preset("tiny", attention=impl))


def test_cudnn_rejects_float32_before_running():
    with pytest.raises(ValueError, match="cudnn' needs bfloat16"):
        check_attention(preset("tiny", attention="cudnn"), backend="gpu")


def test_every_configurable_attention_is_known_to_the_dispatcher():
    runs_on_cpu = set()
    for impl in ATTENTION_IMPLS:
        try:
            check_attention(preset("tiny", attention=impl, dtype="bfloat16"), backend="cpu")
            runs_on_cpu.add(impl)
        except ValueError as error:
            assert "not on 'cpu'" in str(error), error
    assert runs_on_cpu == {"reference", "ring_reference"}


# --- the model --------------------------------------------------------------------------------


def _randomize(model, seed):
    """Non-trivial values for every weight, biases and norms included."""
    graphdef, state = nnx.split(model)
    leaves, treedef = jax.tree.flatten(state)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    leaves = [
        0.1 * jax.random.normal(key, x.shape, x.dtype) for key, x in zip(keys, leaves, strict=True)
    ]
    return nnx.merge(graphdef, jax.tree.unflatten(treedef, leaves))


def _packed_batch(batch, length, vocab):
    """Two packed sequences and padding per row: token ids, per-segment positions, segments."""
    rng = np.random.default_rng(9)
    ids = rng.integers(0, vocab, (batch, length)).astype(np.int32)
    segments = np.zeros((batch, length), np.int32)
    positions = np.zeros((batch, length), np.int32)
    for row in range(batch):
        cut, end = rng.integers(4, length - 8), length - rng.integers(0, 6)
        segments[row, :cut], segments[row, cut:end] = 1, 2
        positions[row, :cut] = np.arange(cut)
        positions[row, cut:end] = np.arange(end - cut)
    return jnp.asarray(ids), jnp.asarray(positions), jnp.asarray(segments)


@pytest.mark.parametrize(
    ("attention", "mesh_shape"),
    [
        ("ring_reference", {"context": 4, "fsdp": 2}),
        # The Pallas paths, in Pallas's interpreter: the flash kernel as the ring's blocks, and
        # alone per device's batch and heads.
        ("ring", {"context": 4, "fsdp": 2}),
        ("flash", {"fsdp": 4, "tensor": 2}),
    ],
)
@pytest.mark.slow
def test_model_with_each_attention_matches_the_unsharded_reference(attention, mesh_shape):
    cfg = preset("tiny", vocab_size=128, num_layers=2)
    reference_model = _randomize(build_model(cfg, seed=0), seed=1)
    graphdef, state = nnx.split(reference_model)
    ring_graphdef, _ = nnx.split(abstract_model(cfg.replace(attention=attention)))
    mesh = make_mesh(**mesh_shape)
    ring_model = place_state(nnx.merge(ring_graphdef, state), mesh)
    ids, positions, segments = _packed_batch(2, 32, cfg.vocab_size)
    weights = jax.random.normal(jax.random.key(2), (*ids.shape, cfg.vocab_size))

    def logits_and_grads(graphdef, state):
        def loss(state):
            logits = nnx.merge(graphdef, state)(ids, positions, segments)
            return jnp.sum(logits * weights), logits

        (_, logits), grads = jax.value_and_grad(loss, has_aux=True)(state)
        return logits, grads

    expected_logits, expected_grads = jax.jit(logits_and_grads, static_argnums=0)(graphdef, state)
    with activation_mesh(mesh), pallas_interpreter():
        _, ring_state = nnx.split(ring_model)
        logits, grads = jax.jit(logits_and_grads, static_argnums=0)(ring_graphdef, ring_state)
    if "context" in mesh_shape:
        assert logits.sharding.spec[1] == "context", "the sequence must really be split"
    diff = np.abs(np.asarray(logits) - np.asarray(expected_logits)).max()
    assert diff <= MODEL_TOL, f"logits: max abs difference {diff:.2e}"
    flat = jax.tree_util.tree_leaves_with_path(grads)
    for (path, got), want in zip(flat, jax.tree.leaves(expected_grads), strict=True):
        scale = max(1.0, float(np.abs(np.asarray(want)).max()))
        diff = np.abs(np.asarray(got) - np.asarray(want)).max() / scale
        assert diff <= MODEL_TOL, (
            f"grad {jax.tree_util.keystr(path)}: relative difference {diff:.2e}"
        )
