"""The lockstep-engine check of tests/test_pods.py: a fixed schedule of engine calls in which
each process acts on its own slots only, yet every process makes every collective call.

    python tests/pods/engine_rounds.py COORDINATOR PROCESS_ID WORK_DIR   # one of 2 processes

`schedule` is also run by the test in one process over all slots, as the reference.
"""

from __future__ import annotations

import json
import os
import sys

PROMPTS = {0: [3, 1, 4, 1, 5, 9, 2, 6], 4: [2, 7, 1, 8, 2, 8]}  # slot 0: process 0's, 4: 1's
STREAMS = {0: 11, 4: 22}
START_ROUND = {0: 0, 4: 2}
OBSERVATION = [5, 6, 7]


def build_engine():
    from swejax.models import build_model, preset
    from swejax.sampling import Engine, EngineConfig, SamplingParams
    from swejax.sharding import make_mesh

    mesh = make_mesh(fsdp=8)
    model = build_model(preset("tiny", dtype="float32", param_dtype="float32"), mesh, seed=0)
    config = EngineConfig(num_slots=8, capacity=64, page_size=8, chunk=8, steps_per_call=3)
    return Engine(model, config, SamplingParams(temperature=1.0), mesh, seed=5)


def schedule(engine) -> dict[int, list[int]]:
    """Six rounds: slot 0 starts at once; slot 4 only in round 2 (its process has nothing to
    feed or decode before, the other nothing to feed then); slot 0 gets an observation in round
    3 and a second turn. Returns the tokens each of this process's slots sampled."""
    mine = set(engine.local_slots)
    sampled: dict[int, list[int]] = {s: [] for s in PROMPTS if s in mine}
    for round_ in range(6):
        starts = [(s, PROMPTS[s], STREAMS[s]) for s in sampled if START_ROUND[s] == round_]
        extends = [(0, OBSERVATION)] if round_ == 3 and 0 in sampled else []
        engine.feed(starts, extends)
        for slot, _, _ in starts:
            engine.start_turn(slot, 6)
        for slot, _ in extends:
            engine.start_turn(slot, 6)
        result = engine.decode()
        for slot in sampled:
            sampled[slot] += result.tokens[slot].tolist()
    return sampled


def main() -> int:
    from swejax import distributed
    from swejax.config import DistributedConfig

    coordinator, process_id, work = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    distributed.start(DistributedConfig(coordinator, 2, process_id, 60))
    engine = build_engine()
    sampled = schedule(engine)
    with open(os.path.join(work, f"process_{process_id}.json"), "w") as f:
        json.dump({"local_slots": list(engine.local_slots), "sampled": sampled}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
