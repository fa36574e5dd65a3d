"""Qwen2.5-7B shape on one GPU: bfloat16 weights and compute, full rematerialisation.

    python -m swejax.main check --config=configs/qwen25_7b_1gpu.py
    python -m swejax.main check --config=configs/qwen25_7b_1gpu.py --config.model.checkpoint=DIR

A good run: one device (mesh "data=1, fsdp=1, tensor=1, context=1"); the summary names the preset
"qwen2.5-7b" with about 7.6 billion parameters (about 15 GB in bfloat16, which fits one 80 GB
GPU), float32 logits of shape (1, 32, 152064), exit code 0. More than one device also works:
fsdp=-1 spreads the weights over all of them.
"""

import ml_collections

from swejax.config import default_config


def get_config() -> ml_collections.ConfigDict:
    config = default_config()
    config.name = "qwen25_7b_1gpu"
    config.model.preset = "qwen2.5-7b"
    config.model.dtype = "bfloat16"
    config.model.param_dtype = "bfloat16"  # float32 weights (30 GB) plus optimizer state won't fit
    config.model.remat = "full"  # recompute activations in the backward pass to fit long rollouts
    config.mesh.data = 1
    config.mesh.fsdp = -1  # one GPU: the whole mesh is this axis, of size 1
    config.mesh.tensor = 1
    config.mesh.context = 1
    return config
