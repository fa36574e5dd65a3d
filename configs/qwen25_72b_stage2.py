"""Phase 2, stage 2 of the paper: multi-turn DAPO at 131k context, T_max = 80 (docs/method.md).

The checkpoint keeps its rope with YaRN scaling, factor 4 (original 32,768 positions): set it in
the checkpoint's config.json (`rope_scaling: {"type": "yarn", "factor": 4.0,
"original_max_position_embeddings": 32768}`), which swejax reads. 100 tasks per iteration from
the curated pool of 2,028 (stage 1's tasks minus those solved in at least 2/3 of attempts and
those never solved: `tasks.curate_from` reads stage 1's trajectories and writes the kept ids to
runs/qwen25_72b_stage2/pool.json), G = 10, 256 trajectories per optimizer step, eps_low 0.2,
eps_high 0.26, lr 1e-6. Starts from stage 1's last parameters (`train.init_from`).

    python -m swejax.main train --config=configs/qwen25_72b_stage2.py \\
        --config.model.checkpoint=/path/to/Qwen2.5-72B-Instruct

A good run: Pass@1 on Verified-50 from stage 1's level towards the paper's 39.0%.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from _paper import paper_config  # noqa: E402


def get_config():
    config = paper_config(
        "qwen25_72b_stage2", capacity=131_072, max_turns=80, context=4, batch_size=256
    )
    config.rft.source = ""
    config.dapo.tasks_per_iteration = 100
    config.dapo.batch_size = 256
    config.dapo.eps_high = 0.26
    config.tasks.curate_from = "runs/qwen25_72b_stage1"
    config.train.init_from = "runs/qwen25_72b_stage1"
    return config
