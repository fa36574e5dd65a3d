"""The demo, and the embedded default: a tiny model learns four built-in tasks on a CPU.

    python -m swejax.main                      # this config
    python -m swejax.main --config=configs/tiny.py   # the same, named as a file

A random 336k-parameter model is evaluated on four built-in tasks, learns from gold
demonstrations written through the scaffold (RFT), then runs six DAPO iterations of real
episodes in bubblewrap, and is evaluated after each phase (8 runs per task); about 9 minutes
on 2 cores. Every value set here differs from the paper's (the section defaults) to fit that
budget. Why DAPO holds rather than lifts this model: docs/stability.md.
"""

import ml_collections

from swejax.config._schema import base_config


def get_config() -> ml_collections.ConfigDict:
    config = base_config()
    config.name = "tiny"
    config.model.preset = "tiny"
    config.model.dtype = "float32"
    config.model.remat = "none"
    config.tasks.source = "builtin"
    # Four small built-in tasks (a tiny model cannot learn all twenty in minutes).
    config.tasks.train = (
        "swejax__b_mdtable_empty,swejax__b_paginator,"
        "swejax__a_median_even_length,swejax__b_roman_repeat"
    )
    config.tasks.runtime = "bwrap"  # no container images needed
    config.scaffold.max_turns = 4
    config.scaffold.window = 8
    config.scaffold.prompts = "compact"  # short prompts for a 1,024-token context
    config.engine.num_slots = 8
    config.engine.capacity = 1024
    config.engine.steps_per_call = 32
    config.rollout.max_reply_tokens = 160
    config.rollout.workers = 8
    config.rft.source = "demonstrations"  # a random model solves nothing to select from
    config.rft.epochs = 200
    config.rft.batch_size = 4
    config.rft.learning_rate = 1e-2
    config.rft.warmup_steps = 5
    config.rft.weight_decay = 0.0
    config.dapo.iterations = 6
    config.dapo.tasks_per_iteration = 4
    config.dapo.group_size = 4
    config.dapo.batch_size = 8
    config.dapo.learning_rate = 1e-4  # 1e-3 undoes the tiny model's RFT
    config.dapo.weight_decay = 0.0
    config.dapo.l_thr = 3
    config.eval.runs = 8  # 4 tasks x 8 runs: Pass@1 with a standard error near 0.06
    return config
