"""What the paper's three runs share: Qwen2.5-72B-Instruct, the full scaffold in docker, AdamW.

Not a config itself: configs/qwen25_72b_{rft,stage1,stage2}.py start from `paper_config()`.
The sections' defaults are the paper's values (docs/method.md); this adds the hardware. The
mesh is for 16 x 8 H200 (128 devices): tensor parallelism inside a node, FSDP across nodes,
and ring attention over the context axis (2 at 65k, 4 at 131k), as planned with
`tools/plan_memory.py --config=...` (docs/long_context.md). Each micro-batch is one row per
batch shard, so an optimizer step of 128 (or 256) trajectories takes as many micro-batches as
it has rows per shard. The engine decodes in the rollout layout (tensor parallelism inside a node,
a replica per node) with as many slots and KV pages as an H200 holds, released before each train
step.
"""

import ml_collections

from swejax.config import base_config

DEVICES = 128  # 16 nodes x 8 GPUs


def paper_config(
    name: str, capacity: int, max_turns: int, context: int, batch_size: int
) -> ml_collections.ConfigDict:
    config = base_config()
    config.name = name
    config.model.preset = "qwen2.5-72b"  # set model.checkpoint to the Instruct weights
    config.model.attention = "ring"
    config.mesh.tensor = 8
    config.mesh.context = context
    config.tasks.source = "swe-rebench-filtered.jsonl"  # the 7,249 filtered SWE-rebench tasks
    config.tasks.eval = ""  # set to the Verified-50 ids for tracking
    config.scaffold.max_turns = max_turns
    config.engine.capacity = capacity
    # The rollout layout (the default): each node decodes alone from a bfloat16 copy at
    # tensor=8. Slots and pages as many as an H200 holds beside the training state and the
    # copy, slots at half the context each (tools/plan_memory.py shows the numbers).
    config.engine.num_slots = 0
    config.engine.num_pages = 0
    config.engine.memory_gib = 141.0
    config.train.row_length = capacity
    batch_shards = DEVICES // (config.mesh.tensor * context)  # data x fsdp
    config.train.micro_batches = max(1, batch_size // batch_shards)
    config.eval.every = 5
    return config
