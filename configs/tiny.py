"""The embedded default: a tiny random model on the local devices; runs on a laptop CPU.

    python -m swejax.main --config=configs/tiny.py
    export XLA_FLAGS=--xla_force_host_platform_device_count=8  # eight fake CPU devices
    python -m swejax.main check --config=configs/tiny.py

A good run: the training pipeline is not built yet, so the run says so in one line on stderr and
runs `check`: it prints the devices and the mesh (all of them on the fsdp axis, e.g.
"data=1, fsdp=8, tensor=1, context=1"), the preset "tiny", its parameter count, the tokenizer,
a 16-token greedy reply sampled through the generation engine (noise: the weights are random),
float32 logits of shape (rows, 32, vocabulary) and a forward time of a few seconds at most
(mostly compilation), and exits 0.
"""

import ml_collections

from swejax.config import default_config


def get_config() -> ml_collections.ConfigDict:
    config = default_config()
    config.name = "tiny"
    config.model.preset = "tiny"
    config.mesh.fsdp = -1  # every device on the fsdp axis
    return config
