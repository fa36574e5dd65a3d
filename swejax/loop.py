"""The iteration loop: RFT, then DAPO iterations (roll out, grade, advantages, filter, train,
metrics, checkpoint), with evaluations, in one run directory that a re-run resumes.

runs/<name>/
    config.json            the resolved config of the run
    metrics.jsonl          one line per finished iteration (and per evaluation)
    trajectories/          iter_NNNNN.jsonl, eval_NNNNN.jsonl, rft.jsonl: every trajectory
    checkpoints/           orbax: parameters, optimizer state, and where the run stands
    plots/                 Pass@1, Pass@k, submits and mean turns per iteration

An iteration counts once its checkpoint is written. A run killed at any moment restarts from
the last checkpoint: the iteration in flight is redone from its start (its partial trajectory
file and any metrics line past the checkpoint are discarded), and no finished one is repeated.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import signal
import time
from collections.abc import Sequence

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx
from tqdm.auto import tqdm

from swejax.env.scaffold import ScaffoldConfig
from swejax.rl import (
    TrainSequence,
    curate_pool,
    dapo_sequences,
    first_fit,
    group_advantages,
    pack,
    pass_metrics,
    rft_sequences,
)
from swejax.rollout import (
    RolloutConfig,
    RolloutRunner,
    Trajectory,
    demonstrate,
    read_trajectories,
)
from swejax.sampling import Engine, EngineConfig, SamplingParams
from swejax.sharding import activation_mesh
from swejax.tasks import Task
from swejax.tokenizer import im_end_id
from swejax.train import BATCH_FIELDS, OptimizerConfig, Trainer, token_logprobs

logger = logging.getLogger("swejax.loop")


class LoopError(ValueError):
    """A run that cannot start as configured; the message is meant for the user."""


def crash_point(name: str) -> None:
    """SIGKILL this process here when SWEJAX_KILL_AT names this point (`rollout:3`, `train:3`,
    `checkpoint:3`, `rft`): the crash-safety tests kill runs at exact moments this way. A
    SIGKILL runs no handler, no `finally` and no atexit, exactly like `kill -9`."""
    if name and os.environ.get("SWEJAX_KILL_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


@dataclasses.dataclass
class Progress:
    """Where the run stands: saved with every checkpoint."""

    rft_done: bool = False
    iteration: int = 0  # DAPO iterations finished
    evaluations: int = 0  # evaluations finished (before training, after RFT, after iterations)


# --- the run directory ---------------------------------------------------------------------


class RunDirectory:
    def __init__(self, config):
        self.path = os.path.abspath(os.path.join(config.run_dir, config.name))
        self.trajectories = os.path.join(self.path, "trajectories")
        self.plots = os.path.join(self.path, "plots")
        self.metrics = os.path.join(self.path, "metrics.jsonl")
        for directory in (self.path, self.trajectories, self.plots):
            os.makedirs(directory, exist_ok=True)
        with open(os.path.join(self.path, "config.json"), "w") as f:
            f.write(config.to_json_best_effort(indent=2, sort_keys=True))
        self.checkpoints = ocp.CheckpointManager(
            os.path.join(self.path, "checkpoints"),
            options=ocp.CheckpointManagerOptions(
                max_to_keep=config.train.checkpoint_keep, enable_async_checkpointing=True
            ),
        )

    def trajectory_file(self, kind: str, index: int) -> str:
        """A fresh file for an iteration's trajectories (a partial one from a killed run goes)."""
        path = os.path.join(self.trajectories, f"{kind}_{index:05d}.jsonl")
        if os.path.exists(path):
            os.remove(path)
        return path

    def append_metrics(self, row: dict) -> None:
        with open(self.metrics, "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def read_metrics(self) -> list[dict]:
        if not os.path.exists(self.metrics):
            return []
        with open(self.metrics) as f:
            return [json.loads(line) for line in f if line.endswith("\n")]

    def keep_metrics(self, progress: Progress) -> None:
        """Drop metrics of work the last checkpoint does not include (a killed run's)."""
        rows = [r for r in self.read_metrics() if _counted(r, progress)]
        with open(self.metrics, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)


def _counted(row: dict, progress: Progress) -> bool:
    if row["kind"] == "rft":
        return progress.rft_done
    if row["kind"] == "dapo":
        return row["iteration"] < progress.iteration
    return row["index"] < progress.evaluations  # eval


# --- checkpoints ----------------------------------------------------------------------------


def save(run: RunDirectory, step: int, model, opt_state, progress: Progress) -> None:
    """Asynchronous: the arrays are copied now and written while the next iteration runs."""
    run.checkpoints.save(
        step,
        args=ocp.args.Composite(
            params=ocp.args.StandardSave(nnx.to_pure_dict(nnx.state(model))),
            opt_state=ocp.args.StandardSave(opt_state),
            progress=ocp.args.JsonSave(dataclasses.asdict(progress)),
        ),
    )


def restore_params(checkpoint_dir: str, model) -> int:
    """Load the latest parameters a run saved (runs/<name>/checkpoints) into `model`."""
    if not os.path.isdir(checkpoint_dir):
        raise LoopError(f"no checkpoint in {checkpoint_dir} (no such directory)")
    manager = ocp.CheckpointManager(os.path.abspath(checkpoint_dir))
    step = manager.latest_step()
    if step is None:
        raise LoopError(f"no checkpoint in {checkpoint_dir}")
    restored = manager.restore(
        step, args=ocp.args.Composite(params=ocp.args.StandardRestore(_abstract_params(model)))
    )
    _load_params(model, restored["params"])
    return step


def _abstract_params(model):
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, nnx.to_pure_dict(nnx.state(model)))


def _load_params(model, params) -> None:
    """Replace the model's parameters in place by a restored pure dict."""
    state = nnx.state(model)
    nnx.replace_by_pure_dict(state, params)
    nnx.update(model, state)


def restore(run: RunDirectory, model, opt_state) -> tuple[Progress, object, int] | None:
    """(progress, optimizer state, step) of the latest checkpoint, the model updated in place."""
    step = run.checkpoints.latest_step()
    if step is None:
        return None
    restored = run.checkpoints.restore(
        step,
        args=ocp.args.Composite(
            params=ocp.args.StandardRestore(_abstract_params(model)),
            opt_state=ocp.args.StandardRestore(
                jax.tree.map(ocp.utils.to_shape_dtype_struct, opt_state)
            ),
            progress=ocp.args.JsonRestore(),
        ),
    )
    _load_params(model, restored["params"])
    return Progress(**restored["progress"]), restored["opt_state"], step


# --- pieces of an iteration ----------------------------------------------------------------


def rollout_config(config, l_thr: int | None = None) -> RolloutConfig:
    s = config.scaffold
    l_thr = config.dapo.l_thr if l_thr is None else l_thr
    if not 0 <= l_thr < s.max_turns:
        raise LoopError(
            f"dapo.l_thr={l_thr} must be at least 0 and below scaffold.max_turns={s.max_turns}: "
            "the length penalty grows from l_thr turns to the turn limit"
        )
    return RolloutConfig(
        runtime=config.tasks.runtime,
        max_reply_tokens=config.rollout.max_reply_tokens,
        workers=config.rollout.workers,
        l_thr=l_thr,
        scaffold=ScaffoldConfig(
            max_turns=s.max_turns,
            max_observation_chars=s.max_observation_chars,
            command_timeout=s.command_timeout,
            window=s.window,
            prompts=s.prompts,
        ),
    )


def make_engine(
    model, config, mesh, tokenizer, temperature: float, seed: int = 0, top_k=0, top_p=1.0
) -> Engine:
    r = config.rollout
    engine = Engine(
        model,
        EngineConfig(
            num_slots=r.slots,
            capacity=r.capacity,
            page_size=r.page_size,
            num_pages=r.num_pages,
            chunk=min(512, r.capacity),
            ingest_rows=min(8, r.slots),
            steps_per_call=r.steps_per_call,
            stop_tokens=(im_end_id(tokenizer),),
        ),
        SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p),
        mesh=mesh,
        seed=seed,
    )
    engine.warm_up()
    return engine


def row_count(sequences: Sequence[TrainSequence], row_length: int, multiple: int) -> int:
    """Rows the sequences pack into, rounded up to a power of two times `multiple` so that the
    train step sees few distinct shapes (each is compiled once)."""
    rows = len(first_fit([len(s.tokens) for s in sequences], row_length))
    units = math.ceil(rows / multiple)
    return multiple * (1 << max(0, units - 1).bit_length())


def train_on(
    trainer: Trainer,
    sequences: list[TrainSequence],
    config,
    batch_size: int,
    rng,
    crash_at: str = "",
):
    """One pass: shuffled optimizer steps of `batch_size` trajectories; metrics of each step."""
    row_length = config.train.row_length or config.rollout.capacity
    multiple = config.train.micro_batches * (
        trainer.mesh.shape["data"] * trainer.mesh.shape["fsdp"] if trainer.mesh else 1
    )
    order = rng.permutation(len(sequences))
    steps = []
    for begin in range(0, len(order), batch_size):
        chunk = [sequences[i] for i in order[begin : begin + batch_size]]
        packed = pack(chunk, row_length, row_count(chunk, row_length, multiple))
        fields = {name: getattr(packed, name) for name in BATCH_FIELDS}
        metrics = trainer.step(fields)
        metrics["fill_ratio"] = packed.fill_ratio
        steps.append(metrics)
        crash_point(crash_at)  # after the first optimizer step changed the weights
    return steps


_forward_logprobs = nnx.jit(token_logprobs)


def recomputed_logprobs(model, trajectories: Sequence[Trajectory], mesh) -> list[np.ndarray]:
    """pi_old by a forward pass of the current weights over each trajectory."""
    out = []
    for t in trajectories:
        tokens = np.asarray(t.tokens, np.int32)[None]
        length = 1 << max(0, tokens.shape[1] - 1).bit_length()  # few shapes to compile
        padded = np.zeros((1, length), np.int32)
        padded[:, : tokens.shape[1]] = tokens
        positions = np.arange(length, dtype=np.int32)[None]
        segments = (positions < tokens.shape[1]).astype(np.int32)
        with activation_mesh(mesh):
            logprobs, _ = _forward_logprobs(model, padded, positions, segments)
        out.append(np.asarray(logprobs)[0, : tokens.shape[1]])
    return out


def outcomes_by_task(tasks: Sequence[Task], runs: int, trajectories) -> dict[str, list[bool]]:
    """task -> resolved per run (a run that did not finish counts as unresolved)."""
    outcomes = {task.instance_id: [False] * runs for task in tasks}
    for t in trajectories:
        outcomes[t.task_id][t.group] = t.resolved
    return outcomes


def _mean(values) -> float:
    values = list(values)
    return float(np.mean(values)) if values else 0.0


def rollout_metrics(trajectories: Sequence[Trajectory]) -> dict:
    usable = [t for t in trajectories if not t.infrastructure_error]
    return {
        "trajectories": len(trajectories),
        "infrastructure_errors": len(trajectories) - len(usable),
        "reward": _mean(t.reward for t in usable),
        "pass_rate": _mean(t.resolved for t in usable),
        "submits": sum(t.end_reason == "submitted" for t in usable),
        "mean_turns": _mean(t.num_turns for t in usable),
        "tokens": sum(len(t.tokens) for t in usable),
        "format_errors": _mean(len(t.format_error_turns) for t in usable),
    }


# --- the loop -------------------------------------------------------------------------------


class Loop:
    def __init__(self, config, mesh, model, tokenizer, train_tasks, eval_tasks):
        if config.dapo.iterations and config.rollout.temperature <= 0:
            raise LoopError("rollout.temperature must be positive for DAPO rollouts")
        rollout_config(config)  # checks the length penalty's threshold before any work
        context = 1 if mesh is None else mesh.shape["context"]
        row_length = config.train.row_length or config.rollout.capacity
        if config.model.attention.startswith("ring") and row_length % (2 * context):
            raise LoopError(
                f"train rows of {row_length} tokens cannot take ring attention over "
                f"context={context}: the zigzag layout needs a multiple of {2 * context} "
                "(set train.row_length or rollout.capacity)"
            )
        self.config, self.mesh, self.model, self.tokenizer = config, mesh, model, tokenizer
        self.train_tasks, self.eval_tasks = list(train_tasks), list(eval_tasks)
        self.run = RunDirectory(config)
        if config.tasks.curate_from:
            record = os.path.join(self.run.path, "pool.json")
            self.train_tasks = curated_tasks(self.train_tasks, config.tasks.curate_from, record)
        self.rng = np.random.default_rng(config.seed)
        self._engines: dict[float, Engine] = {}

    def _trainer(self, phase: str, num_sequences: int = 0) -> Trainer:
        c = self.config
        if phase == "rft":
            steps_per_epoch = math.ceil(max(1, num_sequences) / c.rft.batch_size)
            total = max(c.rft.warmup_steps + 1, c.rft.epochs * steps_per_epoch)
            optimizer = OptimizerConfig(
                learning_rate=c.rft.learning_rate,
                weight_decay=c.rft.weight_decay,
                grad_clip=c.train.grad_clip,
                schedule="warmup_cosine",
                warmup_steps=min(c.rft.warmup_steps, total - 1),
                total_steps=total,
            )
            return Trainer(self.model, optimizer, "sft", c.train.micro_batches, mesh=self.mesh)
        optimizer = OptimizerConfig(
            learning_rate=c.dapo.learning_rate,
            weight_decay=c.dapo.weight_decay,
            grad_clip=c.train.grad_clip,
        )
        return Trainer(
            self.model,
            optimizer,
            "dapo",
            c.train.micro_batches,
            c.dapo.eps_low,
            c.dapo.eps_high,
            mesh=self.mesh,
        )

    def _engine(self, temperature: float, seed: int) -> Engine:
        """One engine per temperature for the whole run (each compiles once), reseeded."""
        engine = self._engines.get(temperature)
        if engine is None:
            engine = make_engine(self.model, self.config, self.mesh, self.tokenizer, temperature)
            self._engines[temperature] = engine
        engine.reseed(seed)
        return engine

    def rollout(self, jobs, path, temperature, seed, l_thr=None, desc="rollout", crash_at=""):
        engine = self._engine(temperature, seed)
        runner = RolloutRunner(engine, self.tokenizer, rollout_config(self.config, l_thr))

        def finished(_: Trajectory) -> None:
            bar.update()
            crash_point(crash_at)  # after the first trajectory is on disk

        try:
            with tqdm(total=len(jobs), desc=desc, unit="episode", leave=False) as bar:
                trajectories, stats = runner.run(jobs, path, on_trajectory=finished)
        finally:
            # The KV pools are as large as the train step's activations at long context: only
            # one of the two lives at a time (the next rollout's reseed allocates them again).
            engine.release()
        return trajectories, stats

    def evaluate(self, progress: Progress, stage: str) -> dict:
        """Pass@1 (mean of eval.runs runs, with its standard error) and Pass@k on the
        evaluation tasks; `stage` says what training came before: initial, rft or dapo."""
        c = self.config
        index = progress.evaluations
        jobs = [(task, run) for task in self.eval_tasks for run in range(c.eval.runs)]
        path = self.run.trajectory_file("eval", index)
        start = time.perf_counter()
        trajectories, _ = self.rollout(
            jobs, path, c.eval.temperature, c.seed + 7919 * (index + 1), desc=f"eval ({stage})"
        )
        outcomes = outcomes_by_task(self.eval_tasks, c.eval.runs, trajectories)
        row = {"kind": "eval", "index": index, "stage": stage, "iterations": progress.iteration}
        row.update(pass_metrics(outcomes), **rollout_metrics(trajectories))
        row["seconds"] = time.perf_counter() - start
        progress.evaluations += 1
        return row

    def rft(self) -> dict:
        c = self.config
        start = time.perf_counter()
        source = c.rft.source
        path = self.run.trajectory_file("rft", 0)
        if source == "demonstrations":
            cfg = rollout_config(c)
            trajectories = []
            for task in tqdm(self.train_tasks, desc="demonstrations", leave=False):
                trajectories.append(demonstrate(task, self.tokenizer, cfg))
                with open(path, "a") as f:
                    f.write(trajectories[-1].to_json() + "\n")
        elif source == "policy":
            jobs = [(task, g) for task in self.train_tasks for g in range(c.rft.attempts)]
            trajectories, _ = self.rollout(jobs, path, c.rollout.temperature, c.seed, desc="rft")
        else:
            if not os.path.isfile(source):
                raise LoopError(f"rft.source {source!r}: no such trajectories file")
            trajectories = list(read_trajectories(source))
        sequences = rft_sequences(trajectories, c.rft.mask_format_errors)
        if not sequences:
            raise LoopError(f"rft.source {source!r} gave no successful trajectory to train on")
        trainer = self._trainer("rft", len(sequences))
        steps = []
        for _ in tqdm(range(c.rft.epochs), desc="rft epochs", leave=False):
            steps += train_on(trainer, sequences, c, c.rft.batch_size, self.rng, crash_at="rft")
        return {
            "kind": "rft",
            "trajectories": len(trajectories),
            "trained_on": len(sequences),
            "steps": len(steps),
            "loss_first": steps[0]["loss"],
            "loss_last": steps[-1]["loss"],
            "fill_ratio": _mean(s["fill_ratio"] for s in steps),
            "seconds": time.perf_counter() - start,
        }

    def iteration(self, index: int, trainer: Trainer) -> dict:
        c = self.config
        timings = {}
        begun = time.perf_counter()
        rng = np.random.default_rng([c.seed, index])
        count = min(c.dapo.tasks_per_iteration, len(self.train_tasks))
        tasks = [self.train_tasks[i] for i in rng.choice(len(self.train_tasks), count, False)]
        jobs = [(task, g) for task in tasks for g in range(c.dapo.group_size)]
        path = self.run.trajectory_file("iter", index)
        trajectories, stats = self.rollout(
            jobs,
            path,
            c.rollout.temperature,
            c.seed + index,
            desc=f"iteration {index} rollout",
            crash_at=f"rollout:{index}",
        )
        timings["rollout_s"] = time.perf_counter() - begun
        usable = [t for t in trajectories if not t.infrastructure_error]
        advantages = group_advantages([t.reward for t in usable], [t.task_id for t in usable])
        sequences = dapo_sequences(usable, advantages)
        kept = [t for t, a in zip(usable, advantages, strict=True) if a != 0.0]
        started = time.perf_counter()
        recomputed = recomputed_logprobs(self.model, kept, self.mesh)
        gaps = [
            np.abs(r - np.asarray(t.logprobs))[np.asarray(t.loss_mask)]
            for r, t in zip(recomputed, kept, strict=True)
        ]
        if c.dapo.pi_old == "recompute":
            sequences = [
                dataclasses.replace(s, old_logprobs=r.tolist())
                for s, r in zip(sequences, recomputed, strict=True)
            ]
        timings["recompute_s"] = time.perf_counter() - started
        started = time.perf_counter()
        steps = (
            train_on(trainer, sequences, c, c.dapo.batch_size, rng, crash_at=f"train:{index}")
            if sequences
            else []
        )
        timings["train_s"] = time.perf_counter() - started
        row = {"kind": "dapo", "iteration": index, **rollout_metrics(trajectories)}
        row.update(
            filtered_fraction=1.0 - len(sequences) / max(1, len(usable)),
            optimizer_steps=len(steps),
            skipped_steps=sum(s["skipped"] for s in steps),
            idle_fraction=stats.idle_fraction,
            logprob_gap_mean=_mean(np.concatenate(gaps)) if gaps else 0.0,
            logprob_gap_max=float(max((g.max() for g in gaps if g.size), default=0.0)),
            seconds=time.perf_counter() - begun,
            **timings,
        )
        for key in ("loss", "grad_norm", "entropy", "clip_low", "clip_high", "fill_ratio"):
            row[key] = _mean(s[key] for s in steps if not s["skipped"])
        return row

    def train(self) -> list[dict]:
        c = self.config
        trainer = self._trainer("dapo")
        resumed = restore(self.run, self.model, trainer.opt_state)
        progress, step = Progress(), 0
        if resumed is not None:
            progress, trainer.opt_state, step = resumed
            logger.info("resuming from checkpoint %d: %s", step, progress)
        elif c.train.init_from:  # a new stage starts from the last one's weights
            source = os.path.join(c.train.init_from, "checkpoints")
            logger.info("starting from %s, step %d", source, restore_params(source, self.model))
        self.run.keep_metrics(progress)
        evaluating = bool(self.eval_tasks and c.eval.runs)
        if evaluating and progress.evaluations == 0:
            # Kept with the next checkpoint; a run killed before it evaluates again.
            self.run.append_metrics(self.evaluate(progress, "initial"))
        if c.rft.source and not progress.rft_done:
            self.run.append_metrics(self.rft())
            progress.rft_done = True
            if evaluating:
                self.run.append_metrics(self.evaluate(progress, "rft"))
            step += 1
            trainer = self._trainer("dapo")  # a fresh optimizer for phase 2
            save(self.run, step, self.model, trainer.opt_state, progress)
        for index in tqdm(range(progress.iteration, c.dapo.iterations), desc="dapo iterations"):
            row = self.iteration(index, trainer)
            progress.iteration = index + 1
            step += 1
            # The row first: it counts once the checkpoint lands (a run killed in between drops
            # it on restore and redoes the iteration), so a finished iteration keeps its row.
            self.run.append_metrics(row)
            save(self.run, step, self.model, trainer.opt_state, progress)
            crash_point(f"checkpoint:{index}")  # the write is in flight
            last = index == c.dapo.iterations - 1
            due = last or (c.eval.every and (index + 1) % c.eval.every == 0)
            if evaluating and due:
                self.run.append_metrics(self.evaluate(progress, "dapo"))
                step += 1
                save(self.run, step, self.model, trainer.opt_state, progress)
        self.run.checkpoints.wait_until_finished()
        metrics = self.run.read_metrics()
        from swejax.plots import write_plots

        write_plots(metrics, self.run.plots)
        return metrics


def attempts_of_run(run_path: str) -> dict[str, list[bool]]:
    """task -> whether each of its DAPO rollouts in a finished run resolved it (harness
    failures left out): the record `curate_pool` reads between stages."""
    directory = os.path.join(run_path, "trajectories")
    if not os.path.isdir(directory):
        raise LoopError(f"tasks.curate_from={run_path!r}: no trajectories directory in it")
    attempts: dict[str, list[bool]] = {}
    for name in sorted(os.listdir(directory)):
        if name.startswith("iter_") and name.endswith(".jsonl"):
            for t in read_trajectories(os.path.join(directory, name)):
                if not t.infrastructure_error:
                    attempts.setdefault(t.task_id, []).append(t.resolved)
    if not attempts:
        raise LoopError(f"tasks.curate_from={run_path!r}: the run has no DAPO trajectories")
    return attempts


def curated_tasks(tasks: Sequence[Task], run_path: str, record: str | None = None) -> list[Task]:
    """The tasks of `tasks` that the curation of SPEC.md keeps after the run at `run_path`
    (attempted there, solved sometimes but in under 2/3 of the attempts); `record` gets a JSON
    account of what was kept and dropped."""
    attempts = attempts_of_run(run_path)
    keep = set(curate_pool(attempts))
    kept = [t for t in tasks if t.instance_id in keep]
    candidates = [attempts[t.instance_id] for t in tasks if t.instance_id in attempts]
    account = {
        "source": os.path.abspath(run_path),
        "tasks": len(tasks),
        "attempted": len(candidates),
        "never_solved": sum(not any(a) for a in candidates),
        "mostly_solved": sum(sum(a) >= 2 / 3 * len(a) for a in candidates),
        "kept": [t.instance_id for t in kept],
    }
    if record:
        with open(record, "w") as f:
            json.dump(account, f, indent=2)
    if not kept:
        raise LoopError(
            f"curating against {run_path!r} leaves no training task "
            f"({account['attempted']} attempted: {account['never_solved']} never solved, "
            f"{account['mostly_solved']} solved in at least 2/3 of attempts)"
        )
    logger.info("curated pool: %d of %d tasks kept", len(kept), len(tasks))
    return kept


def select_tasks(tasks: Sequence[Task], train_ids: str, eval_ids: str) -> tuple[list, list]:
    by_id = {t.instance_id: t for t in tasks}

    def pick(ids: str, what: str) -> list[Task]:
        names = [n for n in (x.strip() for x in ids.split(",")) if n]
        missing = [n for n in names if n not in by_id]
        if missing:
            raise LoopError(f"tasks.{what} names unknown tasks: {', '.join(missing)}")
        return [by_id[n] for n in names]

    held_out = pick(eval_ids, "eval")
    train = pick(train_ids, "train") or [t for t in tasks if t not in held_out]
    return train, held_out or train
