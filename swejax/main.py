"""The command line: `python -m swejax.main [MODE] [--config=FILE] [--config.a.b=VALUE ...]`.

Mistakes in the command, the config or the input files end in one line `swejax: error: ...` on
stderr and exit code 2; anything else is a bug and keeps its traceback. The summary of a mode goes
to stdout, progress and notices to stderr. JAX and the model code are imported inside the modes,
after the config is resolved, so `--help` and config errors answer without loading them.
"""

from __future__ import annotations

import argparse
import difflib
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TypeVar

import ml_collections

from swejax.config import ConfigError, load_config

_PROG = "python -m swejax.main"
_DEFAULT_MODE = "train"
_MODES: dict[str, str] = {
    "train": "RL training: RFT, then DAPO iterations, resumable (the default)",
    "check": "build the mesh and the model, run one forward pass, print a summary",
    "convert": "convert checkpoints: --from-hf DIR --to DIR, or --from DIR --to-hf DIR",
    "eval": "Pass@1 and Pass@k of a model or a run on a task set, SWE-bench predictions",
    "validate-tasks": "per task: the gold patch resolves it, the empty patch does not",
}
_CONFIG_FLAGS_HELP = """\
config:
  --config=FILE        a Python file (see configs/) whose get_config() returns the run config;
                       without it, the embedded default: a tiny model on the local devices
  --config.KEY=VALUE   set one field, e.g. --config.mesh.fsdp=8 --config.model.dtype=bfloat16;
                       unknown keys and values of the wrong type are errors"""
_CHECK_SEQ_LEN = 32
_LISTED_FILES = 20

logger = logging.getLogger("swejax")
_Result = TypeVar("_Result")


class _UserError(Exception):
    """A mistake in the command, config or input files: reported in one line, no traceback."""


class _Exit(Exception):
    """argparse finished early (for example after --help) with this exit status."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so `main` returns a code and prints one line."""

    def error(self, message: str) -> NoReturn:
        raise _UserError(message)

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            sys.stderr.write(message)
        raise _Exit(status)


def main(argv: list[str] | None = None) -> int:
    """Run one mode; returns the process exit code (0 ok, 2 a user error or a mode not built)."""
    args = list(sys.argv[1:] if argv is None else argv)
    _log_to_stderr()
    try:
        return _run(args)
    except _Exit as finished:
        return finished.status
    except (_UserError, ConfigError) as error:
        print(f"swejax: error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2


def _run(args: list[str]) -> int:
    if not args or args[0].startswith("-"):
        if "-h" in args or "--help" in args:
            print(_top_help())
            return 0
        mode, rest = _DEFAULT_MODE, args
    else:
        mode, rest = _checked_mode(args[0]), args[1:]

    parser = _mode_parser(mode)
    options, leftovers = parser.parse_known_args(rest)
    overrides = _config_overrides(leftovers)

    if mode == "convert":
        _check_convert_arguments(options)
    config = load_config(options.config, overrides)
    if mode == "train":
        return _run_train(config)
    if mode == "check":
        return _run_check(config, batch_size=options.batch_size, seq_len=options.seq_len)
    if mode == "validate-tasks":
        return _run_validate_tasks(config, options)
    if mode == "eval":
        return _run_eval(config, options)
    return _run_convert(config, options)


# --- the command line -------------------------------------------------------------------------


def _top_help() -> str:
    width = max(len(mode) for mode in _MODES) + 2
    modes = "\n".join(f"  {mode:<{width}} {summary}" for mode, summary in _MODES.items())
    return (
        f"usage: {_PROG} [MODE] [--config=FILE] [--config.KEY=VALUE ...] [mode options]\n\n"
        "Multi-turn RL for software-engineering agents (RFT then DAPO) on Qwen2.5, in JAX.\n\n"
        f"modes:\n{modes}\n\n{_CONFIG_FLAGS_HELP}\n\n"
        f"`{_PROG} MODE --help` lists the options of one mode."
    )


def _checked_mode(word: str) -> str:
    if word in _MODES:
        return word
    close = difflib.get_close_matches(word, list(_MODES), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    if word.endswith(".py"):
        hint = f"to use a config file, pass --config={word}; "
    raise _UserError(f"unknown mode {word!r}; {hint}modes: {', '.join(_MODES)}")


def _mode_parser(mode: str) -> _Parser:
    parser = _Parser(
        prog=f"{_PROG} {mode}",
        usage=f"{_PROG} {mode} [--config=FILE] [--config.KEY=VALUE ...] [options]",
        description=_MODES[mode],
        epilog=_CONFIG_FLAGS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    # The epilog documents --config; the option itself is not listed twice.
    parser.add_argument("--config", metavar="FILE", default=None, help=argparse.SUPPRESS)
    if mode == "check":
        parser.add_argument(
            "--batch-size",
            type=_positive_int,
            default=None,
            help="rows in the random batch (default: mesh data x fsdp, one row per shard)",
        )
        parser.add_argument(
            "--seq-len",
            type=_positive_int,
            default=_CHECK_SEQ_LEN,
            help=f"tokens per row (default: {_CHECK_SEQ_LEN})",
        )
    if mode == "validate-tasks":
        parser.add_argument(
            "--tasks", default="builtin", help="'builtin' or a JSONL file of SWE-bench records"
        )
        parser.add_argument(
            "--only",
            action="append",
            default=[],
            metavar="ID",
            help="validate only this instance_id (repeatable)",
        )
        parser.add_argument(
            "--runtime",
            default="bwrap",
            help="sandbox runtime: bwrap or docker (images from tools/build_images.py)",
        )
        parser.add_argument(
            "--report",
            metavar="FILE",
            help="JSON report (default: RUN_DIR/NAME/validate-tasks.json)",
        )
    if mode == "eval":
        parser.add_argument(
            "--tasks", default=None, help="task source (default: config.tasks.source)"
        )
        parser.add_argument(
            "--set", default="", help="a named task set, e.g. verified-50 (ids within --tasks)"
        )
        parser.add_argument(
            "--only", action="append", default=[], help="evaluate only this id (repeatable)"
        )
        parser.add_argument("--run", default="", help="a run directory: its latest weights")
        parser.add_argument("--runs", type=_positive_int, default=None, help="k runs per task")
        parser.add_argument("--temperature", type=float, default=None)
        parser.add_argument("--top-k", type=int, default=0, help="0: off")
        parser.add_argument("--top-p", type=float, default=1.0, help="1.0: off")
        parser.add_argument(
            "--predictions", default="", help="SWE-bench predictions JSONL (first run per task)"
        )
        parser.add_argument("--report", default="", help="write the metrics as JSON here")
    if mode == "convert":
        parser.add_argument("--from-hf", metavar="DIR", help="read a Hugging Face checkpoint")
        parser.add_argument("--to", metavar="DIR", help="write a swejax checkpoint")
        parser.add_argument(
            "--from", dest="from_dir", metavar="DIR", help="read a swejax checkpoint"
        )
        parser.add_argument("--to-hf", metavar="DIR", help="write a Hugging Face checkpoint")
        parser.epilog = (
            f"{_CONFIG_FLAGS_HELP}\n\nWeights are held in config.model.param_dtype (float32 unless "
            "set; --config.model.param_dtype=bfloat16 keeps bfloat16 weights) and spread over "
            "config.mesh."
        )
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _config_overrides(leftovers: Sequence[str]) -> list[str]:
    """`--config.a.b=v` arguments as `a.b=v`; anything else argparse did not know is an error."""
    overrides = []
    for argument in leftovers:
        if argument.startswith("--config.") and "=" in argument:
            overrides.append(argument.removeprefix("--config."))
        elif argument.startswith("--config."):
            raise _UserError(f"{argument} needs a value: write {argument}=VALUE")
        elif argument in _MODES:
            raise _UserError(f"the mode goes first: {_PROG} {argument} [options]")
        else:
            raise _UserError(f"unrecognized argument {argument!r} (see {_PROG} --help)")
    return overrides


def _log_to_stderr() -> None:
    # Our progress at INFO; libraries (orbax, absl) only from WARNING, or they drown it.
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.WARNING,
        format="%(asctime)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    logger.setLevel(logging.INFO)


# --- modes ------------------------------------------------------------------------------------


def _run_train(config: ml_collections.ConfigDict) -> int:
    """RFT, then DAPO iterations, in runs/<name>/ (a re-run resumes); a summary at the end."""
    from swejax import models
    from swejax.loop import Loop, LoopError, select_tasks

    mesh = _build_mesh(config.mesh)
    model_cfg = _from_user_input(
        "cannot resolve config.model", models.model_config_from, config.model
    )
    model = _build_model(config, model_cfg, mesh)
    _, tokenizer, _ = _check_tokenizer(config, model_cfg.vocab_size)
    tasks = _load_tasks(config.tasks.source)
    try:
        train_tasks, eval_tasks = select_tasks(tasks, config.tasks.train, config.tasks.eval)
        loop = Loop(config, mesh, model, tokenizer, train_tasks, eval_tasks)
        logger.info(
            "run %s: %d training tasks, %d evaluation tasks, %s parameters",
            loop.run.path,
            len(train_tasks),
            len(eval_tasks),
            f"{models.count_params(model_cfg):,}",
        )
        metrics = loop.train()
    except LoopError as error:
        raise _UserError(str(error)) from error
    print(_summary_table(metrics, loop.run.path))
    return 0


def _run_eval(config: ml_collections.ConfigDict, options: argparse.Namespace) -> int:
    """Pass@1 (mean of k runs, standard error) and Pass@k of a model on a task set."""
    import json

    from swejax import models
    from swejax.loop import (
        LoopError,
        RolloutRunner,
        make_engine,
        outcomes_by_task,
        restore_params,
        rollout_config,
        rollout_metrics,
    )
    from swejax.rl import pass_metrics
    from swejax.tasks import TASK_SETS

    tasks = _load_tasks(options.tasks or config.tasks.source)
    wanted = list(options.only)
    if options.set:
        if options.set not in TASK_SETS:
            raise _UserError(f"unknown task set {options.set!r}; one of {', '.join(TASK_SETS)}")
        wanted += TASK_SETS[options.set]
    if wanted:
        by_id = {t.instance_id: t for t in tasks}
        missing = [i for i in wanted if i not in by_id]
        if missing:
            raise _UserError(
                f"{len(missing)} task ids are not in the task source, e.g. {missing[0]}"
            )
        tasks = [by_id[i] for i in dict.fromkeys(wanted)]
    runs = options.runs or config.eval.runs
    temperature = config.eval.temperature if options.temperature is None else options.temperature
    try:
        rollout = rollout_config(config)  # checked before anything is built
    except LoopError as error:
        raise _UserError(str(error)) from error
    mesh = _build_mesh(config.mesh)
    model_cfg = _from_user_input(
        "cannot resolve config.model", models.model_config_from, config.model
    )
    model = _build_model(config, model_cfg, mesh)
    source = config.model.checkpoint or f"preset {config.model.preset} (random weights)"
    if options.run:
        try:
            step = restore_params(os.path.join(options.run, "checkpoints"), model)
        except LoopError as error:
            raise _UserError(str(error)) from error
        source = f"{options.run} (checkpoint {step})"
    _, tokenizer, _ = _check_tokenizer(config, model_cfg.vocab_size)
    engine = _from_user_input(
        "bad decoding options",
        make_engine,
        model,
        config,
        mesh,
        tokenizer,
        temperature,
        config.seed,
        options.top_k,
        options.top_p,
    )
    runner = RolloutRunner(engine, tokenizer, rollout)
    trajectories, stats = runner.run([(t, r) for t in tasks for r in range(runs)])
    metrics = pass_metrics(outcomes_by_task(tasks, runs, trajectories))
    metrics.update(rollout_metrics(trajectories), model=source, tasks=len(tasks))
    if options.predictions:
        with open(options.predictions, "w") as f:
            for t in trajectories:
                if t.group == 0:
                    row = {"instance_id": t.task_id, "model_patch": t.submission}
                    f.write(json.dumps({**row, "model_name_or_path": source}) + "\n")
    if options.report:
        with open(options.report, "w") as f:
            json.dump(metrics, f, indent=2)
    k = metrics["runs"]
    print(f"model     {source}")
    print(f"tasks     {len(tasks)}, {k} runs each, temperature {temperature:g}")
    print(f"pass@1    {metrics['pass@1']:.3f} (stderr {metrics['pass@1_stderr']:.3f})")
    print(f"pass@{k:<5} {metrics[f'pass@{k}']:.3f}")
    turns = metrics["mean_turns"]
    print(f"submits   {metrics['submits']} of {len(trajectories)}, mean turns {turns:.1f}")
    return 0


def _summary_table(metrics: list[dict], path: str) -> str:
    lines = [f"run {path}", "", "stage          reward  pass   submits  turns  pass@1 (stderr)"]
    for row in metrics:
        if row["kind"] == "rft":
            lines.append(
                f"rft            trained on {row['trained_on']} of {row['trajectories']}, "
                f"loss {row['loss_first']:.3f} -> {row['loss_last']:.3f}"
            )
        elif row["kind"] == "dapo":
            lines.append(
                f"iteration {row['iteration']:<4} {row['reward']:6.3f}  {row['pass_rate']:5.3f}"
                f"  {row['submits']:7d}  {row['mean_turns']:5.1f}"
            )
        else:
            k = row["runs"]
            stage = row["stage"] if row["stage"] != "dapo" else f"it {row['iterations']}"
            lines.append(
                f"eval {stage:<9} {row['reward']:6.3f}  "
                f"{row['pass_rate']:5.3f}  {row['submits']:7d}  {row['mean_turns']:5.1f}  "
                f"{row['pass@1']:.3f} ({row['pass@1_stderr']:.3f}), pass@{k} {row[f'pass@{k}']:.3f}"
            )
    return "\n".join(lines)


def _run_check(config: ml_collections.ConfigDict, batch_size: int | None, seq_len: int) -> int:
    """Mesh, model and one forward pass on random tokens, with a summary on stdout."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from swejax import models, sharding

    mesh = _build_mesh(config.mesh)
    model_cfg = _from_user_input(
        "cannot resolve config.model", models.model_config_from, config.model
    )
    source = (
        f"checkpoint {config.model.checkpoint}"
        if config.model.checkpoint
        else f"preset {config.model.preset}"
    )
    logger.info("building the model (%s) on mesh %s", source, dict(mesh.shape))
    model = _build_model(config, model_cfg, mesh)

    tokenizer_line, tokenizer, chat = _check_tokenizer(config, model_cfg.vocab_size)
    rows = batch_size or mesh.shape["data"] * mesh.shape["fsdp"]
    input_ids = jax.random.randint(
        jax.random.key(config.seed), (rows, seq_len), 0, model_cfg.vocab_size, dtype=jnp.int32
    )
    input_ids = jax.device_put(
        input_ids, sharding.named_sharding(mesh, ("batch", "seq"), input_ids.shape)
    )
    forward = nnx.jit(lambda model, ids: model(ids))
    with sharding.activation_mesh(mesh):
        first_seconds, logits = _timed(forward, model, input_ids)
        again_seconds, logits = _timed(forward, model, input_ids)

    devices = mesh.devices.flatten()
    print(f"devices   {len(devices)} x {devices[0].device_kind}")
    print(f"mesh      {', '.join(f'{axis}={size}' for axis, size in mesh.shape.items())}")
    print(f"model     {source}")
    print(f"params    {models.count_params(model_cfg):,}")
    print(f"dtype     compute {config.model.dtype}, params {config.model.param_dtype}")
    print(f"tokenizer {tokenizer_line}")
    print(f"sample    {_check_generation(model, tokenizer, chat, mesh)}")
    print(f"logits    {tuple(logits.shape)} {logits.dtype}")
    print(f"forward   {first_seconds:.3f} s first call (with compile), {again_seconds:.3f} s again")
    return 0


_SAMPLE_CHAT = (
    {"role": "system", "content": "You are a software engineer. Reply with one command block."},
    {"role": "user", "content": "The test `test_parse_dates` fails with a KeyError."},
    {"role": "assistant", "content": "Let me look at the test first.\n```command\nls tests\n```"},
    {
        "role": "observation",
        "content": "test_dates.py\n(Open file: n/a)\n(Current directory: /repo)",
    },
)


def _check_tokenizer(config: ml_collections.ConfigDict, vocab_size: int) -> tuple[str, Any, Any]:
    """Load the run's tokenizer, check it fits the model's vocabulary, render a sample chat."""
    from swejax import tokenizer as tok

    directory = config.tokenizer or None
    if directory is None and config.model.checkpoint:
        has_files = os.path.isfile(os.path.join(config.model.checkpoint, "tokenizer.json"))
        directory = config.model.checkpoint if has_files else None
    tokenizer = _from_user_input("cannot load the tokenizer", tok.load_tokenizer, directory)
    if len(tokenizer) > vocab_size:
        raise _UserError(
            f"the tokenizer has {len(tokenizer)} tokens but the model's vocabulary is {vocab_size}"
        )
    chat = tok.render_conversation(tokenizer, _SAMPLE_CHAT)
    source = directory or "built-in"
    line = (
        f"{source}, {len(tokenizer):,} tokens; a 4-turn sample chat is {len(chat.ids)} ids, "
        f"{sum(chat.loss_mask)} of them in the loss"
    )
    return line, tokenizer, chat


_SAMPLE_TOKENS = 16


def _check_generation(model: Any, tokenizer: Any, chat: Any, mesh: Any) -> str:
    """Greedy reply to the sample chat through the generation engine, timed."""
    from swejax import sampling
    from swejax import tokenizer as tok

    prompt = chat.ids + tok.generation_prompt(tokenizer)
    start = time.perf_counter()
    (reply,) = sampling.generate(
        model,
        [prompt],
        max_new_tokens=_SAMPLE_TOKENS,
        stop_tokens=[tok.im_end_id(tokenizer)],
        mesh=mesh,
    )
    seconds = time.perf_counter() - start
    text = tokenizer.decode(reply.tokens)
    return f"{len(reply.tokens)} tokens greedy in {seconds:.2f} s (with compile): {text[:60]!r}"


def _check_convert_arguments(options: argparse.Namespace) -> None:
    """Exactly one direction, with both of its directories, and an output that holds nothing."""
    from_hf = options.from_hf is not None or options.to is not None
    to_hf = options.from_dir is not None or options.to_hf is not None
    both_forms = "--from-hf DIR --to DIR, or --from DIR --to-hf DIR"
    if from_hf and to_hf:
        raise _UserError(f"convert takes one direction, not both: {both_forms}")
    if not from_hf and not to_hf:
        raise _UserError(f"convert needs a direction: {both_forms}")
    if from_hf and (options.from_hf is None or options.to is None):
        raise _UserError("convert from Hugging Face needs both --from-hf DIR and --to DIR")
    if to_hf and (options.from_dir is None or options.to_hf is None):
        raise _UserError("convert to Hugging Face needs both --from DIR and --to-hf DIR")
    output = options.to if from_hf else options.to_hf
    if os.path.exists(output) and (not os.path.isdir(output) or os.listdir(output)):
        raise _UserError(f"output {output} already exists and is not an empty directory")


def _run_convert(config: ml_collections.ConfigDict, options: argparse.Namespace) -> int:
    from swejax import models

    mesh = _build_mesh(config.mesh)
    if options.from_hf is not None:
        logger.info("reading the Hugging Face checkpoint %s", options.from_hf)
        model = _from_user_input(
            f"cannot read Hugging Face checkpoint {options.from_hf}",
            models.load_hf_checkpoint,
            options.from_hf,
            dtype=config.model.dtype,
            mesh=mesh,
            param_dtype=config.model.param_dtype,
        )
        models.save_checkpoint(model, options.to)
        models.copy_side_files(options.from_hf, options.to)
        output = options.to
    else:
        logger.info("reading the swejax checkpoint %s", options.from_dir)
        model = _from_user_input(
            f"cannot read swejax checkpoint {options.from_dir}",
            models.load_checkpoint,
            options.from_dir,
            mesh=mesh,
        )
        models.save_hf_checkpoint(model, options.to_hf)
        models.copy_side_files(options.from_dir, options.to_hf)
        output = options.to_hf
    print(_written_summary(output))
    return 0


def _run_validate_tasks(config: ml_collections.ConfigDict, options: argparse.Namespace) -> int:
    """Grade the gold and the empty patch of every task; exit 1 if any task is not valid."""
    import json

    from tqdm.auto import tqdm

    from swejax.env.grading import grade
    from swejax.tasks import TaskError, builtin_tasks, load_jsonl

    if options.tasks == "builtin":
        tasks = builtin_tasks()
    else:
        tasks = _from_user_input("cannot load tasks", load_jsonl, options.tasks)
    if options.only:
        unknown = sorted(set(options.only) - {t.instance_id for t in tasks})
        if unknown:
            raise _UserError(f"--only names tasks that are not in {options.tasks}: {unknown}")
        tasks = [t for t in tasks if t.instance_id in options.only]
    rows = []
    for task in tqdm(tasks, desc="validating tasks", unit="task", disable=None):
        start = time.perf_counter()
        try:
            gold, empty = grade(task, task.patch, options.runtime), grade(task, "", options.runtime)
            problem = gold.infrastructure_error or empty.infrastructure_error
            valid = gold.resolved and not empty.resolved and not problem
            row = {
                "gold_resolved": gold.resolved,
                "empty_resolved": empty.resolved,
                "error": problem,
                "gold_outcomes": gold.outcomes,
            }
        except TaskError as error:
            valid, row = False, {"gold_resolved": None, "empty_resolved": None, "error": str(error)}
        rows.append(
            {
                "instance_id": task.instance_id,
                "valid": valid,
                "seconds": round(time.perf_counter() - start, 2),
                **row,
            }
        )
    report = options.report or os.path.join(config.run_dir, config.name, "validate-tasks.json")
    os.makedirs(os.path.dirname(os.path.abspath(report)), exist_ok=True)
    with open(report, "w") as f:
        json.dump({"runtime": options.runtime, "tasks": rows}, f, indent=2)
    width = max([len(r["instance_id"]) for r in rows] + [4])
    print(f"{'task':<{width}}  gold  empty  valid  seconds")
    for r in rows:
        marks = [_mark(r["gold_resolved"]), _mark(r["empty_resolved"]), _mark(r["valid"])]
        print(
            f"{r['instance_id']:<{width}}  {marks[0]:<4}  {marks[1]:<5}  {marks[2]:<5}  "
            f"{r['seconds']:.1f}" + (f"  {r['error'][:60]}" if r["error"] else "")
        )
    valid = sum(r["valid"] for r in rows)
    print(f"{valid} of {len(rows)} tasks valid; report: {report}")
    return 0 if valid == len(rows) else 1


def _mark(value: bool | None) -> str:
    return "-" if value is None else ("yes" if value else "no")


# --- helpers ----------------------------------------------------------------------------------


def _build_model(config: ml_collections.ConfigDict, model_cfg: Any, mesh: Any) -> Any:
    from swejax import models

    if config.model.checkpoint:
        return _from_user_input(
            f"cannot load checkpoint {config.model.checkpoint}",
            models.load_hf_checkpoint,
            config.model.checkpoint,
            dtype=config.model.dtype,
            mesh=mesh,
            param_dtype=config.model.param_dtype,
            remat=config.model.remat,
            attention=config.model.attention,
        )
    return models.build_model(model_cfg, mesh, seed=config.seed)


def _load_tasks(source: str) -> list[Any]:
    from swejax import tasks

    if source == "builtin":
        return tasks.builtin_tasks()
    if source.startswith("hf:"):
        name, _, split = source[3:].partition(":")
        return _from_user_input(
            "cannot load tasks", tasks.load_hf_dataset, name, split=split or "test"
        )
    return _from_user_input("cannot load tasks", tasks.load_jsonl, source)


def _build_mesh(mesh_cfg: ml_collections.ConfigDict) -> Any:
    from swejax import sharding

    try:
        return sharding.make_mesh(
            data=mesh_cfg.data, fsdp=mesh_cfg.fsdp, tensor=mesh_cfg.tensor, context=mesh_cfg.context
        )
    except sharding.MeshError as error:
        raise _UserError(f"config.mesh: {error}") from error


def _from_user_input(
    failure: str, function: Callable[..., _Result], *args: Any, **kwargs: Any
) -> _Result:
    """`function(*args, **kwargs)`, where a bad input (ValueError, missing file) is a user error."""
    try:
        return function(*args, **kwargs)
    except (ValueError, FileNotFoundError) as error:
        raise _UserError(f"{failure}: {error}") from error


def _timed(function: Callable[..., Any], *args: Any) -> tuple[float, Any]:
    import jax

    start = time.perf_counter()
    result = jax.block_until_ready(function(*args))
    return time.perf_counter() - start, result


def _written_summary(directory: str) -> str:
    """What `directory` now holds: its files with sizes (the first few) and the total."""
    files = sorted(
        os.path.join(root, name) for root, _, names in os.walk(directory) for name in names
    )
    total = sum(os.path.getsize(path) for path in files)
    lines = [f"wrote {directory}: {len(files)} files, {_human_size(total)}"]
    for path in files[:_LISTED_FILES]:
        lines.append(f"  {os.path.relpath(path, directory)}  {_human_size(os.path.getsize(path))}")
    if len(files) > _LISTED_FILES:
        lines.append(f"  ... and {len(files) - _LISTED_FILES} more")
    return "\n".join(lines)


def _human_size(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable: the loop returns at GiB")


if __name__ == "__main__":
    sys.exit(main())
