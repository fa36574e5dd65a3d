"""`eval`: Pass@1 (mean of k runs, with its standard error) and Pass@k of a model or a run on a
task set, through the same evaluation the training loop runs; SWE-bench predictions."""

from __future__ import annotations

import argparse
import json
import os

from swejax import builder
from swejax.config import Config
from swejax.errors import UserError
from swejax.modes import positive_int
from swejax.modes._decoding import DECODINGS, eval_decoding

SUMMARY = "Pass@1 and Pass@k of a model or a run on a task set, SWE-bench predictions"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tasks", default=None, help="task source (default: config.tasks.source)")
    parser.add_argument(
        "--set", default="", help="a named task set, e.g. verified-50 (ids within --tasks)"
    )
    parser.add_argument(
        "--only", action="append", default=[], help="evaluate only this id (repeatable)"
    )
    parser.add_argument("--run", default="", help="a run directory: its latest weights")
    parser.add_argument(
        "--runs", type=positive_int, default=None, help="k runs per task (default: eval.runs)"
    )
    parser.add_argument(
        "--decoding",
        choices=DECODINGS,
        default="config",
        help="config: eval.temperature, or --temperature, --top-k, --top-p; checkpoint: the "
        "generation_config.json of config.model.checkpoint (its temperature, top-k, top-p and "
        "repetition penalty; do_sample false: greedy), each of its fields accounted for in the "
        "output and the report",
    )
    parser.add_argument("--temperature", type=float, default=None, help="default: eval.temperature")
    parser.add_argument("--top-k", type=int, default=None, help="default 0: off")
    parser.add_argument("--top-p", type=float, default=None, help="default 1.0: off")
    parser.add_argument(
        "--predictions", default="", help="SWE-bench predictions JSONL (first run per task)"
    )
    parser.add_argument("--report", default="", help="write the metrics as JSON here")
    parser.add_argument(
        "--out",
        default="",
        metavar="DIR",
        help="where every episode (trajectories.jsonl, as each finishes), report.json, "
        "config.json and the log go (default: RUN/eval with --run, else RUN_DIR/NAME/eval)",
    )
    parser.add_argument(
        "--write-eval-scripts",
        default="",
        metavar="DIR",
        help="write each chosen task's grading script (for SWE-bench-family tasks the "
        "harness's /eval.sh) as DIR/<instance_id>.sh and exit, without building a model",
    )
    parser.epilog = (
        "Without --set or --only, the tasks are the config's evaluation tasks (tasks.eval, "
        "else the training tasks)."
    )


def _chosen_tasks(config: Config, options: argparse.Namespace) -> list:
    from swejax.tasks import TASK_SETS, select_tasks

    tasks = builder.load_tasks(config, options.tasks)
    wanted = list(options.only)
    if options.set:
        if options.set not in TASK_SETS:
            raise UserError(f"unknown task set {options.set!r}; one of {', '.join(TASK_SETS)}")
        wanted += TASK_SETS[options.set]
    if not wanted:
        return select_tasks(tasks, config.tasks.train, config.tasks.eval)[1]
    by_id = {t.instance_id: t for t in tasks}
    missing = [i for i in wanted if i not in by_id]
    if missing:
        raise UserError(f"{len(missing)} task ids are not in the task source, e.g. {missing[0]}")
    return [by_id[i] for i in dict.fromkeys(wanted)]


def _write_eval_scripts(tasks: list, folder: str) -> int:
    """The scripts grading would run, one file per task; nothing else is built or run."""
    from swejax.env.grading import eval_script

    scripts = {task.instance_id: eval_script(task) for task in tasks}  # all, before writing
    os.makedirs(folder, exist_ok=True)
    for instance_id, script in scripts.items():
        with open(os.path.join(folder, f"{instance_id}.sh"), "w", encoding="utf-8") as f:
            f.write(script)
    print(f"wrote {len(scripts)} eval scripts to {folder}")
    return 0


def run(config: Config, options: argparse.Namespace) -> int:
    from swejax import distributed
    from swejax import run as runs

    tasks = _chosen_tasks(config, options)
    if options.write_eval_scripts:
        return _write_eval_scripts(tasks, options.write_eval_scripts)
    builder.require_runtime(config.tasks.runtime)
    k = options.runs or config.eval.runs
    decoding = eval_decoding(config, options)  # before the build: a bad file fails fast
    built = builder.build(config)
    source = config.model.checkpoint or f"preset {config.model.preset} (random weights)"
    if options.run:
        step = runs.restore_params(os.path.join(options.run, "checkpoints"), built.model)
        source = f"{options.run} (checkpoint {step})"
    p = decoding.sampling
    sampling = runs.Sampling(p.temperature, False, p.top_k, p.top_p, p.repetition_penalty)
    ctx = runs.Context(built, None, [], tasks)
    out = _out_folder(config, options)
    trajectory_file = _open_out_folder(out, config)
    # Draws as a run's first evaluation: on the same weights and tasks, the same episodes.
    passes, summary, decoded, trajectories = runs.evaluate(
        ctx, tasks, k, sampling, 0, trajectory_file, "eval"
    )
    # With many processes each ran its share of the tasks; process 0 writes for all.
    firsts = [{"instance_id": t.task_id, "model_patch": t.submission} for t in trajectories]
    firsts = [row for row, t in zip(firsts, trajectories, strict=True) if t.group == 0]
    if distributed.process_count() > 1:
        firsts = [row for part in distributed.allgather_json(firsts) for row in part]
    if not distributed.is_leader():
        return 0
    order = {task.instance_id: i for i, task in enumerate(tasks)}
    firsts.sort(key=lambda row: order[row["instance_id"]])
    if options.predictions:
        with open(options.predictions, "w") as f:
            for row in firsts:
                f.write(json.dumps({**row, "model_name_or_path": source}) + "\n")
    report = {**passes.to_dict(), **vars(summary), **vars(decoded)}
    report.update(model=source, tasks=len(tasks))
    report["decoding"] = decoding.to_dict()
    for report_file in filter(None, [os.path.join(out, "report.json"), options.report]):
        with open(report_file, "w") as f:
            json.dump(report, f, indent=2)
    print(f"model     {source}")
    print("\n".join(decoding.lines()))
    print(f"tasks     {len(tasks)}, {k} runs each, {decoding.summary()}")
    print(f"pass@1    {passes.pass_at_1:.3f} (stderr {passes.pass_at_1_stderr:.3f})")
    print(f"pass@{k:<5} {passes.pass_at_k:.3f}")
    turns = summary.mean_turns
    print(f"submits   {summary.submits} of {summary.trajectories}, mean turns {turns:.1f}")
    print(f"episodes  {out} (python -m swejax.main show {trajectory_file})")
    return 0


def _out_folder(config: Config, options: argparse.Namespace) -> str:
    """--out, else the eval folder of the run evaluated (--run), else of the config's run."""
    if options.out:
        return options.out
    return os.path.join(options.run or os.path.join(config.run_dir, config.name), "eval")


def _open_out_folder(out: str, config: Config) -> str:
    """The folder made, this process's log into it, the config beside the episodes (`show`
    finds their tokenizer there); this process's fresh trajectory file (after `build`: with
    many processes each writes its own, trajectories.process_P.jsonl)."""
    from swejax import distributed
    from swejax.config import config_to_json
    from swejax.run._directory import fresh_trajectory_file, log_to_file

    os.makedirs(out, exist_ok=True)
    log_to_file(os.path.join(out, f"process_{distributed.process_index()}.log"))
    if distributed.is_leader():
        with open(os.path.join(out, "config.json"), "w") as f:
            f.write(config_to_json(config))
    return fresh_trajectory_file(out, "trajectories")
