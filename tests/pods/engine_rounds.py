"""The engine checks of tests/test_pods.py. Over the training layout (a mesh of both
processes): a fixed schedule of engine calls in which each process acts on its own slots only,
yet every process makes every collective call. Over the rollout layout: each process copies the
weights once (collective), then decodes the same schedule alone, on its own devices, with no
collective across the processes in its decode program.

    python tests/pods/engine_rounds.py COORDINATOR PROCESS_ID WORK_DIR   # one of 2 processes

`schedule` is also run by the test in one process over all slots, as the reference.
"""

from __future__ import annotations

import dataclasses
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


def schedule(engine, slots: dict[int, int] | None = None) -> dict[int, list[int]]:
    """Six rounds: slot 0 starts at once; slot 4 only in round 2 (its process has nothing to
    feed or decode before, the other nothing to feed then); slot 0 gets an observation in round
    3 and a second turn. Returns the tokens each of this process's slots sampled. `slots` maps
    the schedule's slots to the engine's (default: the same, where they are this process's)."""
    if slots is None:
        slots = {s: s for s in PROMPTS if s in engine.local_slots}
    sampled: dict[int, list[int]] = {s: [] for s in slots}
    for round_ in range(6):
        starts = [(slots[s], PROMPTS[s], STREAMS[s]) for s in slots if START_ROUND[s] == round_]
        extends = [(slots[0], OBSERVATION)] if round_ == 3 and 0 in slots else []
        engine.feed(starts, extends)
        for slot, _, _ in starts:
            engine.start_turn(slot, 6)
        for slot, _ in extends:
            engine.start_turn(slot, 6)
        result = engine.decode()
        for s in sampled:
            sampled[s] += result.tokens[slots[s]].tolist()
    return sampled


def decode_collectives(engine) -> dict[str, int]:
    """Bytes the engine's compiled decode program moves, within a host and across hosts."""
    from swejax.memory_plan import collective_bytes

    text = engine.trace_decode().lower().compile().as_text()
    hosts = [d.process_index for d in engine.mesh.devices.flat]
    return dataclasses.asdict(collective_bytes(text, hosts))


def on_rollout_layout(engine) -> dict:
    """The schedule again on this process's rollout replicas, from a copy of the weights."""
    import jax

    from swejax.sampling import Engine, decode_weights, rollout_layout

    layout = rollout_layout(engine.mesh)
    weights = decode_weights(engine.model, layout)
    share = dataclasses.replace(engine.config, num_slots=engine.config.num_slots // 2)
    local = Engine(engine.model, share, engine.sampling, layout.mesh, seed=5)
    local.use_weights(weights.params)
    mine = next(s for s in PROMPTS if s in engine.local_slots)
    return {
        "processes": sorted({d.process_index for d in layout.mesh.devices.flat}),
        "me": jax.process_index(),
        "collective": local.collective,
        "copied": weights.copied,
        "sampled": schedule(local, {mine: 0}),
        "bytes": decode_collectives(local),
    }


def main() -> int:
    from swejax import distributed
    from swejax.config import DistributedConfig

    coordinator, process_id, work = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    distributed.start(DistributedConfig(coordinator, 2, process_id, 60))
    engine = build_engine()
    sampled = schedule(engine)
    result = {"local_slots": list(engine.local_slots), "sampled": sampled}
    result["training_bytes"] = decode_collectives(engine)
    result["rollout"] = on_rollout_layout(engine)
    with open(os.path.join(work, f"process_{process_id}.json"), "w") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
