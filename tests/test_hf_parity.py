"""swejax Qwen2 logits against transformers' Qwen2ForCausalLM, both directions, float32."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hf_utils import hf_logits, random_hf_model, tiny_hf_config
from transformers import Qwen2ForCausalLM

from swejax.models import build_model, load_hf_checkpoint, preset, save_hf_checkpoint

TOL = 1e-4  # max abs logit difference in float32

CASES = {
    "untied_gqa2": dict(num_key_value_heads=2),
    "tied": dict(tie_word_embeddings=True),
    "kv1": dict(num_key_value_heads=1),
    "mha": dict(num_key_value_heads=4),
    "yarn": dict(
        rope_scaling={"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64},
        max_position_embeddings=256,
    ),
}


def randomize(model, seed: int):
    """Give every weight (biases and norms included) non-trivial random values."""
    graphdef, state = nnx.split(model)
    leaves, treedef = jax.tree.flatten(state)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    leaves = [
        0.1 * jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves, strict=True)
    ]
    return nnx.merge(graphdef, jax.tree.unflatten(treedef, leaves))


def _ids(rng, shape, vocab):
    return rng.integers(0, vocab, size=shape, dtype=np.int32)


@pytest.mark.parametrize("case", sorted(CASES))
def test_hf_saved_model_loads_with_same_logits(case, tmp_path):
    config = tiny_hf_config(**CASES[case])
    hf = random_hf_model(config)
    hf.save_pretrained(tmp_path)
    model = load_hf_checkpoint(str(tmp_path), dtype="float32")
    ids = _ids(np.random.default_rng(1), (2, 200), config.vocab_size)
    diff = np.abs(np.asarray(model(jnp.asarray(ids))) - hf_logits(hf, ids)).max()
    assert diff <= TOL, f"{case}: max abs logit difference {diff:.2e}"


def test_left_padding_matches_hf(tmp_path):
    config = tiny_hf_config()
    hf = random_hf_model(config, seed=3)
    hf.save_pretrained(tmp_path)
    model = load_hf_checkpoint(str(tmp_path))
    rng = np.random.default_rng(2)
    ids = _ids(rng, (3, 24), config.vocab_size)
    lengths = np.array([24, 17, 5])
    mask = (np.arange(24)[None, :] >= (24 - lengths)[:, None]).astype(np.int32)
    positions = np.clip(np.cumsum(mask, axis=1) - 1, 0, None).astype(np.int32)
    ours = np.asarray(model(jnp.asarray(ids), jnp.asarray(positions), jnp.asarray(mask)))
    theirs = hf_logits(hf, ids, attention_mask=mask, position_ids=positions)
    real = mask.astype(bool)
    diff = np.abs(ours - theirs)[real].max()
    assert diff <= TOL, f"max abs logit difference on real tokens {diff:.2e}"


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.slow
def test_saved_model_loads_in_transformers(tied, tmp_path):
    cfg = preset("tiny", vocab_size=160, tie_word_embeddings=tied, num_layers=3)
    model = randomize(build_model(cfg, seed=4), seed=4)
    save_hf_checkpoint(model, str(tmp_path))
    hf = Qwen2ForCausalLM.from_pretrained(
        tmp_path, torch_dtype="float32", attn_implementation="eager"
    )
    ids = _ids(np.random.default_rng(5), (2, 40), cfg.vocab_size)
    diff = np.abs(np.asarray(model(jnp.asarray(ids))) - hf_logits(hf.eval(), ids)).max()
    assert diff <= TOL, f"max abs logit difference {diff:.2e}"
    again = load_hf_checkpoint(str(tmp_path))
    assert np.array_equal(np.asarray(again(jnp.asarray(ids))), np.asarray(model(jnp.asarray(ids))))


def test_bfloat16_is_as_accurate_as_transformers_bfloat16(tmp_path):
    """In bfloat16 both implementations drift from float32; swejax must not drift further.

    Mean absolute error against the float32 logits, with 10% slack for rounding noise: over
    seeds 0-3 the two means agree within 3% (about 0.009 on logits of magnitude 3.5).
    """
    import torch

    config = tiny_hf_config()
    hf = random_hf_model(config, seed=6)
    hf.save_pretrained(tmp_path)
    ids = _ids(np.random.default_rng(7), (2, 64), config.vocab_size)
    exact = hf_logits(hf, ids)
    hf_bf16 = hf_logits(hf.to(torch.bfloat16), ids)
    model = load_hf_checkpoint(str(tmp_path), dtype="bfloat16")
    assert model.layers.attn.q_kernel[...].dtype == jnp.bfloat16
    ours = np.asarray(model(jnp.asarray(ids)))
    ours_error = np.abs(ours - exact).mean()
    hf_error = np.abs(hf_bf16 - exact).mean()
    assert ours_error <= 1.1 * hf_error, f"bf16 mean error {ours_error:.4f}, HF {hf_error:.4f}"
