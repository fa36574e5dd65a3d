"""What the paper's three runs share (SPEC.md): Qwen2.5-72B-Instruct, the full scaffold, AdamW.

Not a config itself: configs/qwen25_72b_{rft,stage1,stage2}.py start from `paper_config()`.
The mesh is for 16 x 8 H200 (128 devices): tensor parallelism inside a node, FSDP across nodes,
and ring attention over the context axis (2 at 65k, 4 at 131k), as planned with
tools/plan_memory.py (README, "Memory planning"). The KV pool gives each of the 64 slots its
full context (split over fsdp, context and tensor: 10 GiB per device at 65k, 20 GiB at 131k),
released before each train step.
"""

import ml_collections

from swejax.config import default_config


def paper_config(
    name: str, capacity: int, max_turns: int, context: int
) -> ml_collections.ConfigDict:
    config = default_config()
    config.name = name
    config.model.preset = "qwen2.5-72b"  # set model.checkpoint to the Instruct weights
    config.model.dtype = "bfloat16"
    config.model.param_dtype = "float32"
    config.model.remat = "full"
    config.model.attention = "ring"
    config.mesh.data = 1
    config.mesh.fsdp = -1
    config.mesh.tensor = 8
    config.mesh.context = context
    config.tokenizer = ""  # the checkpoint's own tokenizer files
    config.tasks.source = "swe-rebench-filtered.jsonl"  # the 7,249 filtered SWE-rebench tasks
    config.tasks.train = ""
    config.tasks.eval = ""  # set to the Verified-50 ids for tracking
    config.tasks.runtime = "docker"
    config.scaffold.max_turns = max_turns
    config.scaffold.window = 100
    config.scaffold.prompts = ""
    config.scaffold.max_observation_chars = 10_000
    config.rollout.capacity = capacity
    config.rollout.max_reply_tokens = 4096
    config.rollout.slots = 64
    config.rollout.steps_per_call = 16
    config.rollout.workers = 64
    config.rollout.temperature = 1.0
    config.train.row_length = capacity
    config.train.grad_clip = 1.0
    config.eval.runs = 10  # Pass@1 as the mean of 10 runs, and Pass@10
    config.eval.temperature = 1.0
    config.eval.every = 5
    return config
