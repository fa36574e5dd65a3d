"""The checkpoint check of tests/test_pods.py, on one of 2 processes x 4 devices:

    python tests/pods/checkpoints.py COORDINATOR PROCESS_ID WORK_DIR

WORK_DIR holds `hf/` (a multi-file HF checkpoint) and `orbax_one/` (the same weights as a swejax
checkpoint), both written by one process x 8 devices. Each process loads `hf/` at the test's
mesh, recording what it read; both export it again to `hf_pod/` (HF) and `orbax_pod/` (orbax);
and both restore `orbax_one/`, which must equal what they loaded. Each writes
`process_P.json`: its read blocks and whether the restore matched.
"""

from __future__ import annotations

import json
import os
import sys

MESH = {"fsdp": 4, "tensor": 2}  # a tensor pair on one process, fsdp split over the two
SHARD_BYTES = 2**19  # the largest file written: the tiny model's checkpoint takes several


def main() -> int:
    import jax
    import numpy as np
    from flax import nnx

    from swejax import distributed
    from swejax.config import DistributedConfig
    from swejax.models import ReadLog, hf_io, load_hf_checkpoint, save_hf_checkpoint
    from swejax.run.checkpoints import load_checkpoint, save_checkpoint
    from swejax.sharding import make_mesh

    coordinator, process_id, work = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    hf_io._SHARD_BYTES = SHARD_BYTES
    distributed.start(DistributedConfig(coordinator, 2, process_id, 60))
    mesh = make_mesh(**MESH)
    read_log = ReadLog()
    model = load_hf_checkpoint(os.path.join(work, "hf"), mesh=mesh, read_log=read_log)
    save_hf_checkpoint(model, os.path.join(work, "hf_pod"))
    save_checkpoint(model, os.path.join(work, "orbax_pod"))
    restored = load_checkpoint(os.path.join(work, "orbax_one"), mesh=mesh)
    loaded_leaves = jax.tree.leaves(nnx.state(model))
    restored_leaves = jax.tree.leaves(nnx.state(restored))
    same = all(
        a.sharding == b.sharding
        and all(
            np.array_equal(np.asarray(x.data), np.asarray(y.data))
            for x, y in zip(a.addressable_shards, b.addressable_shards, strict=True)
        )
        for a, b in zip(loaded_leaves, restored_leaves, strict=True)
    )
    report = {
        "blocks": [[name, block, n] for (name, block), n in read_log.blocks.items()],
        "bytes_read": read_log.bytes_read,
        "orbax_one_equals_hf": same,
    }
    with open(os.path.join(work, f"process_{process_id}.json"), "w") as f:
        json.dump(report, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
