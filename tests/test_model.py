"""Model properties that need no Hugging Face peer: packing, sharding, presets, checkpoints."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from test_hf_parity import randomize

from swejax.models import (
    PRESETS,
    abstract_model,
    build_model,
    count_params,
    load_hf_checkpoint,
    place_state,
    preset,
    save_hf_checkpoint,
)
from swejax.run import load_checkpoint, save_checkpoint
from swejax.sharding import activation_mesh, make_mesh

TOL = 1e-4


@pytest.fixture(scope="module")
def model():
    return randomize(build_model(preset("tiny", vocab_size=256, num_layers=3), seed=0), seed=1)


@pytest.mark.slow
def test_packed_segments_equal_separate_sequences(model):
    rng = np.random.default_rng(0)
    lengths = [7, 12, 5]
    seqs = [rng.integers(0, 256, n).astype(np.int32) for n in lengths]
    row_len = sum(lengths) + 4  # trailing padding is segment 0
    ids = np.zeros((1, row_len), np.int32)
    segments = np.zeros((1, row_len), np.int32)
    positions = np.zeros((1, row_len), np.int32)
    start = 0
    for k, seq in enumerate(seqs):
        ids[0, start : start + len(seq)] = seq
        segments[0, start : start + len(seq)] = k + 1
        positions[0, start : start + len(seq)] = np.arange(len(seq))
        start += len(seq)
    packed = np.asarray(model(jnp.asarray(ids), jnp.asarray(positions), jnp.asarray(segments)))
    start = 0
    for seq in seqs:
        alone = np.asarray(model(jnp.asarray(seq[None])))[0]
        diff = np.abs(packed[0, start : start + len(seq)] - alone).max()
        assert diff <= TOL, f"segment at {start}: max abs difference {diff:.2e}"
        start += len(seq)


def test_segments_do_not_leak(model):
    """Changing one segment's tokens leaves every other segment's logits unchanged."""
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 256, (1, 20)).astype(np.int32)
    segments = np.array([[1] * 10 + [2] * 10], np.int32)
    positions = np.array([list(range(10)) * 2], np.int32)
    changed = ids.copy()
    changed[0, :10] = rng.integers(0, 256, 10)
    a = np.asarray(model(jnp.asarray(ids), jnp.asarray(positions), jnp.asarray(segments)))
    b = np.asarray(model(jnp.asarray(changed), jnp.asarray(positions), jnp.asarray(segments)))
    assert np.abs(a[0, 10:] - b[0, 10:]).max() == 0.0
    assert np.abs(a[0, :10] - b[0, :10]).max() > 1e-3


MESHES = {
    "data2_fsdp2_tensor2": dict(data=2, fsdp=2, tensor=2),
    "fsdp8": dict(fsdp=8),
    "fsdp4_tensor2": dict(fsdp=4, tensor=2),
}


@pytest.mark.parametrize("mesh_name", sorted(MESHES))
@pytest.mark.slow
def test_sharded_forward_equals_unsharded(model, mesh_name):
    mesh = make_mesh(**MESHES[mesh_name])
    sharded = place_state(model, mesh)
    q = sharded.layers.attn.q_kernel[...]
    assert len(q.sharding.device_set) == 8
    assert not q.sharding.is_fully_replicated, "weights must actually be split over the mesh"
    ids = jnp.asarray(np.random.default_rng(2).integers(0, 256, (8, 32)).astype(np.int32))
    with activation_mesh(mesh):
        logits = jax.jit(lambda x: sharded(x))(ids)
    assert not logits.sharding.is_fully_replicated
    diff = np.abs(np.asarray(logits) - np.asarray(model(ids))).max()
    assert diff <= TOL, f"{mesh_name}: max abs difference {diff:.2e}"


@pytest.mark.slow
def test_sharded_init_places_weights_on_the_mesh():
    mesh = make_mesh(fsdp=4, tensor=2)
    model = build_model(preset("tiny"), mesh, seed=0)
    spec = model.layers.mlp.gate_kernel[...].sharding.spec
    assert tuple(spec) == (None, "fsdp", "tensor")
    unsharded = build_model(preset("tiny"), seed=0)
    a = np.asarray(model.layers.mlp.gate_kernel[...])
    assert np.array_equal(a, np.asarray(unsharded.layers.mlp.gate_kernel[...]))


PUBLISHED_BILLIONS = {
    "qwen2.5-0.5b": 0.49,
    "qwen2.5-1.5b": 1.54,
    "qwen2.5-3b": 3.09,
    "qwen2.5-7b": 7.62,
    "qwen2.5-14b": 14.7,
    "qwen2.5-32b": 32.8,
    "qwen2.5-72b": 72.7,
}


@pytest.mark.parametrize("name", sorted(PUBLISHED_BILLIONS))
def test_preset_parameter_counts(name):
    billions = count_params(PRESETS[name]) / 1e9
    published = PUBLISHED_BILLIONS[name]
    # Model cards give three significant figures, mostly rounded but truncated for 14B
    # (14.770B is labelled 14.7B): the count must agree with the label one way or the other.
    digits = 2 if published < 10 else 1
    scale = 10**digits
    as_labelled = {round(billions, digits), math.floor(billions * scale) / scale}
    assert published in as_labelled, f"{name}: {billions:.4f}B counted, {published}B published"


def test_tiny_untied_is_tiny_with_its_own_output_head():
    tied, untied = PRESETS["tiny"], PRESETS["tiny-untied"]
    assert untied.replace(tie_word_embeddings=True) == tied
    assert count_params(untied) - count_params(tied) == tied.vocab_size * tied.hidden_size
    model = build_model(untied, seed=0)
    hidden = model.hidden_states(jnp.arange(8, dtype=jnp.int32)[None])
    head = np.asarray(hidden) @ np.asarray(model.lm_head[...])
    np.testing.assert_allclose(model.logits(hidden), head, rtol=1e-5, atol=1e-5)
    tied_head = np.asarray(hidden) @ np.asarray(model.embed[...]).T
    assert not np.allclose(head, tied_head, atol=1e-3)


def test_unknown_preset_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown model preset 'qwen9'"):
        preset("qwen9")


def test_hf_load_on_mesh_places_shards(model, tmp_path):
    save_hf_checkpoint(model, str(tmp_path))
    mesh = make_mesh(fsdp=4, tensor=2)
    loaded = load_hf_checkpoint(str(tmp_path), mesh=mesh)
    o = loaded.layers.attn.o_kernel[...]
    assert tuple(o.sharding.spec) == (None, "tensor", None, "fsdp")
    assert np.array_equal(np.asarray(o), np.asarray(model.layers.attn.o_kernel[...]))


def test_hf_checkpoint_with_wrong_shape_names_the_tensor(model, tmp_path):
    from safetensors.numpy import load_file, save_file

    save_hf_checkpoint(model, str(tmp_path))
    path = tmp_path / "model.safetensors"
    tensors = load_file(path)
    tensors["model.layers.1.mlp.up_proj.weight"] = tensors["model.layers.1.mlp.up_proj.weight"][:-1]
    save_file(tensors, path)
    with pytest.raises(
        ValueError, match=r"model\.layers\.1\.mlp\.up_proj\.weight.*\(127, 64\).*\(128, 64\)"
    ):
        load_hf_checkpoint(str(tmp_path))
    del tensors["model.layers.2.self_attn.k_proj.bias"]
    save_file(tensors, path)
    with pytest.raises(
        ValueError, match=r"missing tensor 'model\.layers\.2\.self_attn\.k_proj\.bias'"
    ):
        load_hf_checkpoint(str(tmp_path))


def test_missing_checkpoint_directory_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_hf_checkpoint(str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_hf_checkpoint(str(tmp_path))


def test_sharded_hf_files_with_index(model, tmp_path, monkeypatch):
    import swejax.models.hf_io as hf_io

    monkeypatch.setattr(hf_io, "_SHARD_BYTES", 200_000)
    files = save_hf_checkpoint(model, str(tmp_path))
    assert len(files) > 1 and (tmp_path / "model.safetensors.index.json").exists()
    loaded = load_hf_checkpoint(str(tmp_path))
    ids = jnp.arange(12, dtype=jnp.int32)[None]
    assert np.array_equal(np.asarray(loaded(ids)), np.asarray(model(ids)))


def test_orbax_checkpoint_round_trip_onto_a_mesh(model, tmp_path):
    save_checkpoint(model, str(tmp_path / "ckpt"))
    mesh = make_mesh(data=2, fsdp=2, tensor=2)
    restored = load_checkpoint(str(tmp_path / "ckpt"), mesh=mesh)
    q = restored.layers.attn.q_kernel[...]
    assert tuple(q.sharding.spec) == (None, "fsdp", "tensor", None)
    for a, b in zip(
        jax.tree.leaves(nnx.state(restored)), jax.tree.leaves(nnx.state(model)), strict=True
    ):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(FileExistsError):
        save_checkpoint(model, str(tmp_path / "ckpt"))


@pytest.mark.parametrize("policy", ["full", "dots", "save_attn_mlp_out"])
@pytest.mark.slow
def test_remat_policies_keep_values_and_gradients(model, policy):
    ids = jnp.asarray(np.random.default_rng(3).integers(0, 256, (2, 16)).astype(np.int32))
    remat = nnx.merge(
        nnx.graphdef(abstract_model(model.cfg.replace(remat=policy))), nnx.state(model)
    )

    def loss(m):
        return jnp.mean(jax.nn.log_softmax(m(ids))[..., 0])

    g_ref = nnx.grad(loss)(model)
    g = nnx.grad(loss)(remat)
    for a, b in zip(jax.tree.leaves(g_ref), jax.tree.leaves(g), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6, rtol=1e-5)
