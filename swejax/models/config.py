"""Model shapes: `ModelConfig`, the Qwen2.5 presets, and conversion to and from HF config.json."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from swejax.models.attention_impls import ATTENTION_IMPLS
from swejax.models.remat import REMAT_POLICIES

DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class YarnScaling:
    """YaRN rotary scaling (arXiv 2309.00071) as Hugging Face defines it for Qwen2."""

    factor: float
    original_max_position_embeddings: int
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    attention_factor: float | None = None  # None: 0.1 * ln(factor) + 1
    truncate: bool = True


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    head_dim: int | None = None  # None: hidden_size // num_heads
    tie_word_embeddings: bool = False
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1_000_000.0
    rope_scaling: YarnScaling | None = None
    max_position_embeddings: int = 32768
    # How the model runs, not what it is.
    dtype: str = "float32"  # compute dtype
    param_dtype: str = "float32"
    remat: str = "none"
    attention: str = "reference"

    def __post_init__(self) -> None:
        if self.head_dim is None:
            object.__setattr__(self, "head_dim", self.hidden_size // self.num_heads)
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads={self.num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}"
            )
        # The remat and attention names are their tables' keys; whether the attention can run
        # on this backend is checked when a model is built (`attention.check_attention`).
        for field, allowed in (
            ("dtype", DTYPES),
            ("param_dtype", DTYPES),
            ("remat", tuple(REMAT_POLICIES)),
            ("attention", tuple(ATTENTION_IMPLS)),
        ):
            if getattr(self, field) not in allowed:
                raise ValueError(f"model.{field}={getattr(self, field)!r}; choose one of {allowed}")

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)


def _qwen25(hidden, layers, heads, kv_heads, mlp, vocab, tied) -> ModelConfig:
    return ModelConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=kv_heads,
        intermediate_size=mlp,
        tie_word_embeddings=tied,
    )


# Shapes from the published config.json of each Qwen2.5-*-Instruct checkpoint.
PRESETS: dict[str, ModelConfig] = {
    "qwen2.5-0.5b": _qwen25(896, 24, 14, 2, 4864, 151936, True),
    "qwen2.5-1.5b": _qwen25(1536, 28, 12, 2, 8960, 151936, True),
    "qwen2.5-3b": _qwen25(2048, 36, 16, 2, 11008, 151936, True),
    "qwen2.5-7b": _qwen25(3584, 28, 28, 4, 18944, 152064, False),
    "qwen2.5-14b": _qwen25(5120, 48, 40, 8, 13824, 152064, False),
    "qwen2.5-32b": _qwen25(5120, 64, 40, 8, 27648, 152064, False),
    "qwen2.5-72b": _qwen25(8192, 80, 64, 8, 29568, 152064, False),
    # CPU sizes for tests and the embedded default; vocabulary fits the built-in tokenizer.
    "tiny": ModelConfig(
        vocab_size=4096,
        hidden_size=64,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        intermediate_size=128,
        tie_word_embeddings=True,
        max_position_embeddings=4096,
    ),
    "small": ModelConfig(
        vocab_size=4096,
        hidden_size=256,
        num_layers=4,
        num_heads=8,
        num_kv_heads=2,
        intermediate_size=768,
        tie_word_embeddings=True,
        max_position_embeddings=8192,
    ),
}


# The tiny shape with its own output head, as Qwen2.5-7B and larger have (docs/stability.md).
PRESETS["tiny-untied"] = PRESETS["tiny"].replace(tie_word_embeddings=False)


def preset(name: str, **changes: Any) -> ModelConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name].replace(**changes)


def from_hf_config(hf: dict[str, Any], **changes: Any) -> ModelConfig:
    """ModelConfig from a Qwen2 config.json (legacy `rope_scaling` or newer `rope_parameters`)."""
    model_type = hf.get("model_type")
    if model_type not in ("qwen2", None):
        raise ValueError(f"config.json has model_type={model_type!r}; swejax supports 'qwen2'")
    if hf.get("use_sliding_window"):
        raise ValueError("config.json enables use_sliding_window; swejax supports full attention")
    rope = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    theta = rope.get("rope_theta", hf.get("rope_theta", 10_000.0))
    max_pos = hf.get("max_position_embeddings", 32768)
    scaling = None
    if rope_type == "yarn":
        scaling = YarnScaling(
            factor=float(rope["factor"]),
            original_max_position_embeddings=int(
                rope.get("original_max_position_embeddings") or max_pos
            ),
            beta_fast=float(rope.get("beta_fast") or 32.0),
            beta_slow=float(rope.get("beta_slow") or 1.0),
            attention_factor=rope.get("attention_factor"),
            truncate=bool(rope.get("truncate", True)),
        )
    elif rope_type != "default":
        raise ValueError(f"config.json rope type {rope_type!r} is not supported (default, yarn)")
    return ModelConfig(
        vocab_size=hf["vocab_size"],
        hidden_size=hf["hidden_size"],
        num_layers=hf["num_hidden_layers"],
        num_heads=hf["num_attention_heads"],
        num_kv_heads=hf.get("num_key_value_heads", hf["num_attention_heads"]),
        intermediate_size=hf["intermediate_size"],
        head_dim=hf.get("head_dim"),
        tie_word_embeddings=hf.get("tie_word_embeddings", False),
        rms_norm_eps=hf.get("rms_norm_eps", 1e-6),
        rope_theta=float(theta),
        rope_scaling=scaling,
        max_position_embeddings=max_pos,
    ).replace(**changes)


def to_hf_config(cfg: ModelConfig, torch_dtype: str) -> dict[str, Any]:
    """A config.json that transformers' Qwen2ForCausalLM loads."""
    rope_scaling = None
    if cfg.rope_scaling is not None:
        s = cfg.rope_scaling
        rope_scaling = {
            "type": "yarn",
            "rope_type": "yarn",
            "factor": s.factor,
            "original_max_position_embeddings": s.original_max_position_embeddings,
            "beta_fast": s.beta_fast,
            "beta_slow": s.beta_slow,
            "truncate": s.truncate,
        }
        if s.attention_factor is not None:
            rope_scaling["attention_factor"] = s.attention_factor
    return {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads,
        "intermediate_size": cfg.intermediate_size,
        "head_dim": cfg.head_dim,
        "hidden_act": "silu",
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "rms_norm_eps": cfg.rms_norm_eps,
        "rope_theta": cfg.rope_theta,
        "rope_scaling": rope_scaling,
        "max_position_embeddings": cfg.max_position_embeddings,
        "use_sliding_window": False,
        "attention_dropout": 0.0,
        "torch_dtype": torch_dtype,
    }


def read_hf_config(checkpoint_dir: str) -> dict[str, Any]:
    path = os.path.join(checkpoint_dir, "config.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no config.json in checkpoint directory {checkpoint_dir!r}")
    with open(path) as f:
        return json.load(f)
