"""Phase 2, stage 1 of the paper: multi-turn DAPO at 65k context, T_max = 40 (docs/method.md).

Per iteration 300 tasks from the 7,249-task pool, G = 10 rollouts each at temperature 1.0 with
no other filter; advantages within each task's group; zero-advantage trajectories dropped; 128
trajectories per optimizer step, one pass; eps_low 0.2, eps_high 0.3; AdamW lr 1e-6
(0.9, 0.999, 1e-8), weight decay 0.1, gradient clipping 1.0; no KL, no entropy bonus; length
penalty from L_thr = 10 turns: the `dapo` and `optimizer` sections' defaults. Starts from the
RFT run's last parameters (`train.init_from`).

    python -m swejax.main train --config=configs/qwen25_72b_stage1.py \\
        --config.model.checkpoint=/path/to/Qwen2.5-72B-Instruct

A good run: Pass@1 on Verified-50 rising from the RFT model's ~20% towards the paper's 35.7%
over 100 iterations, 2-8 optimizer steps per iteration.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from _paper import paper_config  # noqa: E402


def get_config():
    config = paper_config(
        "qwen25_72b_stage1", capacity=65_536, max_turns=40, context=2, batch_size=128
    )
    config.rft.source = ""
    config.train.init_from = "runs/qwen25_72b_rft"
    return config
