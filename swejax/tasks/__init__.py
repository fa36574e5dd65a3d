"""Tasks: the SWE-bench schema, loaders (JSONL, Hugging Face datasets, built-in), and
repositories to run them on."""

from swejax.tasks._builtin import BUILTIN_DIR, builtin_tasks, load_builtin_task, materialize
from swejax.tasks._sets import TASK_SETS, VERIFIED_50, load_source, select_tasks, split_list
from swejax.tasks._task import (
    Task,
    TaskError,
    load_hf_dataset,
    load_jsonl,
    patch_files,
    task_from_record,
)

__all__ = [
    "BUILTIN_DIR",
    "TASK_SETS",
    "VERIFIED_50",
    "Task",
    "TaskError",
    "builtin_tasks",
    "load_builtin_task",
    "load_hf_dataset",
    "load_jsonl",
    "load_source",
    "materialize",
    "patch_files",
    "select_tasks",
    "split_list",
    "task_from_record",
]
