"""Tiny random Hugging Face Qwen2 models for parity tests."""

from __future__ import annotations

import numpy as np
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM


def tiny_hf_config(**changes) -> Qwen2Config:
    fields = dict(
        vocab_size=160,
        hidden_size=64,
        intermediate_size=112,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        rope_theta=10_000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
        use_sliding_window=False,
    )
    fields.update(changes)
    return Qwen2Config(**fields)


def random_hf_model(config: Qwen2Config, seed: int = 0) -> Qwen2ForCausalLM:
    """A float32 Qwen2 whose every weight, biases and norms included, is random and non-trivial."""
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config).to(torch.float32).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.copy_(1.0 + 0.2 * torch.randn_like(param))
            else:
                param.copy_(0.1 * torch.randn_like(param))
    model.config._attn_implementation = "eager"
    return model


def hf_logits(model, input_ids: np.ndarray, attention_mask=None, position_ids=None) -> np.ndarray:
    kwargs = {}
    if attention_mask is not None:
        kwargs["attention_mask"] = torch.from_numpy(np.asarray(attention_mask, np.int64))
    if position_ids is not None:
        kwargs["position_ids"] = torch.from_numpy(np.asarray(position_ids, np.int64))
    with torch.no_grad():
        out = model(torch.from_numpy(np.asarray(input_ids, np.int64)), **kwargs)
    return out.logits.float().numpy()
