"""Per-device memory and rollout speed of a training run, planned before any hardware is
reserved.

Two views of the run a config trains (`plan_spec`): its train step (the Trainer's own
`jit_train_step`) and the rollout beside it (the engine's decode program and KV pool, in each
decoding layout).

- `analytic_breakdown`, `rollout_items`: every part counted in bytes (`_analytic`, `_rollout`).
- `fit_engine`: the slots and KV pages that fit a device's memory (the run sizes its engine
  with it too).
- `compile_train_step`, `compile_decode`, `compile_attention`: XLA's numbers, compiled ahead
  of time for the target mesh on fake CPU devices or a TPU slice (`_compile`);
  `collective_bytes`: what a compiled program moves within and across hosts (`_collectives`).
- `plan_layouts`: per layout, the engine, what a decode step reads and moves, and estimates of
  decode speed and one iteration's rollout time on a `Hardware` (`_decode_plan`).

`tools/plan_memory.py --config=FILE` prints it all and whether each phase fits.
"""

from swejax.memory_plan._analytic import (
    BATCH_DTYPES,
    GIB,
    Breakdown,
    Item,
    PlanSpec,
    abstract_mesh,
    analytic_breakdown,
    local_elements,
)
from swejax.memory_plan._collectives import (
    Collective,
    CollectiveBytes,
    collective_bytes,
    program_collectives,
)
from swejax.memory_plan._compile import (
    CompileOutOfMemory,
    CompileResult,
    XlaMemory,
    abstract_batch,
    abstract_train_state,
    compile_attention,
    compile_decode,
    compile_train_step,
)
from swejax.memory_plan._decode_plan import HARDWARE, Assumptions, Hardware, plan_layouts
from swejax.memory_plan._format import format_report
from swejax.memory_plan._report import PlanOptions, plan
from swejax.memory_plan._rollout import (
    HEADROOM,
    DecodeShape,
    decode_shape,
    fit_engine,
    page_bytes,
    rollout_items,
    state_bytes,
)
from swejax.memory_plan._spec import batch_rows, plan_spec

__all__ = [
    "Assumptions",
    "BATCH_DTYPES",
    "HARDWARE",
    "HEADROOM",
    "DecodeShape",
    "GIB",
    "Hardware",
    "Breakdown",
    "Collective",
    "CollectiveBytes",
    "CompileOutOfMemory",
    "CompileResult",
    "Item",
    "PlanOptions",
    "PlanSpec",
    "XlaMemory",
    "abstract_batch",
    "abstract_mesh",
    "abstract_train_state",
    "batch_rows",
    "analytic_breakdown",
    "collective_bytes",
    "compile_attention",
    "compile_decode",
    "compile_train_step",
    "decode_shape",
    "fit_engine",
    "format_report",
    "local_elements",
    "page_bytes",
    "plan",
    "plan_layouts",
    "plan_spec",
    "program_collectives",
    "rollout_items",
    "state_bytes",
]
