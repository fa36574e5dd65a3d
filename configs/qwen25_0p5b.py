"""Qwen2.5-0.5B shape (random weights unless model.checkpoint is set), bfloat16 compute.

    python -m swejax.main check --config=configs/qwen25_0p5b.py
    python -m swejax.main check --config=configs/qwen25_0p5b.py --config.model.checkpoint=DIR

A good run: one GPU (or a few CPU devices, slowly) on the fsdp axis; the summary names the preset
"qwen2.5-0.5b" with about 494 million parameters (the embedding is tied to the output layer),
compute bfloat16 over float32 weights, logits of shape (rows, 32, 151936), and a second forward
call well under a second on a GPU. Exit code 0.
"""

import ml_collections

from swejax.config import default_config


def get_config() -> ml_collections.ConfigDict:
    config = default_config()
    config.name = "qwen25_0p5b"
    config.model.preset = "qwen2.5-0.5b"
    config.model.dtype = "bfloat16"  # weights stay float32 for the optimizer
    return config
