"""A run: its directory and metric rows, checkpoints, the phases (RFT, a DAPO iteration, an
evaluation), curation between stages, and the loop that orders them and resumes.

    built = builder.build(config)
    ctx = open_run(built, train_tasks, eval_tasks)
    rows = train(ctx)                      # RftRow, DapoRow and EvalRow, as in metrics.jsonl
"""

from swejax.run._crash import crash_point
from swejax.run._curation import attempts_of_run, curated_tasks
from swejax.run._directory import RunDirectory
from swejax.run._loop import open_run, train
from swejax.run._phases import (
    Context,
    RunError,
    Sampling,
    evaluate,
    evaluation,
    outcomes_by_task,
    recomputed_logprobs,
    rollout,
    train_on,
)
from swejax.run._rows import (
    DapoRow,
    DecodeSummary,
    EvalRow,
    PassMetrics,
    Progress,
    RftRow,
    RolloutSummary,
    Row,
    row_from_dict,
    row_to_dict,
)
from swejax.run.checkpoints import (
    CheckpointError,
    RunCheckpoints,
    load_checkpoint,
    restore_params,
    save_checkpoint,
)

__all__ = [
    "CheckpointError",
    "Context",
    "DapoRow",
    "DecodeSummary",
    "EvalRow",
    "PassMetrics",
    "Progress",
    "RftRow",
    "RolloutSummary",
    "Row",
    "RunCheckpoints",
    "RunDirectory",
    "RunError",
    "Sampling",
    "attempts_of_run",
    "crash_point",
    "curated_tasks",
    "evaluate",
    "evaluation",
    "load_checkpoint",
    "open_run",
    "outcomes_by_task",
    "recomputed_logprobs",
    "restore_params",
    "rollout",
    "row_from_dict",
    "row_to_dict",
    "save_checkpoint",
    "train",
    "train_on",
]
