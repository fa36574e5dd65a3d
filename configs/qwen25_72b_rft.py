"""Phase 1 of the paper: rejection fine-tuning of Qwen2.5-72B-Instruct (docs/method.md).

The base model runs 10 times on every training task; the trajectories whose diff passes (6,548
of 72,490 in the paper) are trained on for one epoch at 65k context: AdamW, lr 5e-6, weight
decay 0.1, 10 warm-up steps then cosine to 0, batch 64; loss on assistant tokens only, with
format-error turns kept in the context but masked out. All of that is the `rft` section's
defaults; this file sets the model, the hardware and no DAPO.

    python -m swejax.main train --config=configs/qwen25_72b_rft.py \\
        --config.model.checkpoint=/path/to/Qwen2.5-72B-Instruct

A good run: the initial evaluation near the paper's 11.4% on Verified-50, about 9% of the
rollouts resolved and kept, then an evaluation near 20%.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from _paper import paper_config  # noqa: E402


def get_config():
    config = paper_config("qwen25_72b_rft", capacity=65_536, max_turns=40, context=2, batch_size=64)
    config.rft.source = "policy"
    config.dapo.iterations = 0
    return config
