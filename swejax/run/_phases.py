"""The phases of a run: a rollout, an evaluation, RFT, and one DAPO iteration.

Each phase takes the run's `Context` (what was built, the run directory, the tasks) and returns
its typed metrics row; `swejax.run._loop` orders them, saves and resumes. The `eval` mode calls
`evaluate` on its own, so an evaluation means the same in both.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Sequence

import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from swejax import builder
from swejax.errors import UserError
from swejax.rl import (
    TrainSequence,
    dapo_sequences,
    first_fit,
    group_advantages,
    pack,
    pass_metrics,
    rft_sequences,
)
from swejax.rollout import (
    RolloutStats,
    Trajectory,
    demonstrate,
    read_trajectories,
    write_trajectory,
)
from swejax.run._crash import crash_point
from swejax.run._directory import RunDirectory
from swejax.run._rows import DapoRow, EvalRow, PassMetrics, Progress, RftRow, RolloutSummary, mean
from swejax.sampling import SamplingParams, require_unbiased
from swejax.sharding import activation_mesh
from swejax.tasks import Task
from swejax.train import BATCH_FIELDS, Trainer, token_logprobs


class RunError(UserError):
    """A run that cannot go on as configured; the message is meant for the user."""


@dataclasses.dataclass
class Context:
    """What every phase works with."""

    built: builder.Built
    run: RunDirectory | None  # None: an evaluation on its own (the eval mode)
    train_tasks: list[Task]
    eval_tasks: list[Task]
    # One engine per way of sampling for the whole run (each compiles once), reseeded per phase.
    engines: dict = dataclasses.field(default_factory=dict)

    @property
    def config(self):
        return self.built.config


# --- rollouts and evaluation ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Sampling:
    """How a rollout samples. Rollouts whose trajectories train (`training`) take the policy's
    own distribution, temperature only; an evaluation may filter it."""

    temperature: float
    training: bool
    top_k: int = 0
    top_p: float = 1.0


def rollout(
    ctx: Context, jobs, path: str | None, sampling: Sampling, draw: tuple, desc: str, crash_at=""
) -> tuple[list[Trajectory], RolloutStats]:
    """Every (task, group) job rolled out with the current weights; trajectories on disk as
    they finish. `draw` names the rollout's random streams (phase, iteration): with the run's
    seed, the job and the token position it fixes every draw. The engine's KV pools are
    released afterwards."""
    key = (sampling.temperature, sampling.top_k, sampling.top_p)
    if sampling.training:  # a filtered sampler would bias the DAPO importance ratio
        require_unbiased(SamplingParams(*key))
    seed = ctx.config.seed
    engine = ctx.engines.get(key)
    if engine is None:
        engine = builder.build_engine(ctx.built, *key, seed=seed)
        ctx.engines[key] = engine
    engine.reseed(seed)
    runner = builder.build_runner(ctx.built, engine)

    def finished(_: Trajectory) -> None:
        bar.update()
        crash_point(crash_at)  # after the first trajectory is on disk

    try:
        with tqdm(total=len(jobs), desc=desc, unit="episode", leave=False) as bar:
            return runner.run(jobs, path, on_trajectory=finished, draw=draw)
    finally:
        # The KV pools are as large as the train step's activations at long context: only
        # one of the two lives at a time (the next rollout's reseed allocates them again).
        engine.release()


def outcomes_by_task(tasks: Sequence[Task], runs: int, trajectories) -> dict[str, list[bool]]:
    """task -> resolved per run (a run that did not finish counts as unresolved)."""
    outcomes = {task.instance_id: [False] * runs for task in tasks}
    for t in trajectories:
        outcomes[t.task_id][t.group] = t.resolved
    return outcomes


def evaluate(
    ctx: Context, tasks: Sequence[Task], runs: int, sampling: Sampling, index: int, path, desc
) -> tuple[PassMetrics, RolloutSummary, list[Trajectory]]:
    """Pass@1 (mean of `runs` runs per task, with its standard error) and Pass@runs; `index`
    is the run's evaluation count (its draws are ("eval", index, task, run))."""
    jobs = [(task, run) for task in tasks for run in range(runs)]
    trajectories, _ = rollout(ctx, jobs, path, sampling, ("eval", index), desc)
    passes = PassMetrics.from_dict(pass_metrics(outcomes_by_task(tasks, runs, trajectories)))
    return passes, RolloutSummary.of(trajectories), trajectories


def evaluation(ctx: Context, progress: Progress, stage: str) -> EvalRow:
    """The run's evaluation on its evaluation tasks; `stage` says what training came before:
    initial, rft or dapo."""
    c = ctx.config
    index = progress.evaluations
    started = time.perf_counter()
    passes, summary, _ = evaluate(
        ctx,
        ctx.eval_tasks,
        c.eval.runs,
        Sampling(c.eval.temperature, training=False),
        index,
        ctx.run.trajectory_file("eval", index),
        f"eval ({stage})",
    )
    progress.evaluations += 1
    seconds = time.perf_counter() - started
    return EvalRow(index, stage, progress.iteration, passes, summary, seconds)


# --- training ------------------------------------------------------------------------------


def row_count_for(rows: int, multiple: int) -> int:
    """`rows` rounded up to a power of two times `multiple`, so that the train step sees few
    distinct shapes (each is compiled once)."""
    units = math.ceil(rows / multiple)
    return multiple * (1 << max(0, units - 1).bit_length())


def train_on(
    ctx: Context, trainer: Trainer, sequences: list[TrainSequence], batch_size: int, rng, crash_at
) -> list[dict]:
    """One pass: shuffled optimizer steps of `batch_size` trajectories; metrics of each step."""
    row_length = ctx.config.row_length
    mesh = ctx.built.mesh
    shards = mesh.shape["data"] * mesh.shape["fsdp"] if mesh is not None else 1
    multiple = ctx.config.train.micro_batches * shards
    order = rng.permutation(len(sequences))
    steps = []
    for begin in range(0, len(order), batch_size):
        chunk = [sequences[i] for i in order[begin : begin + batch_size]]
        rows = len(first_fit([len(s.tokens) for s in chunk], row_length))
        packed = pack(chunk, row_length, row_count_for(rows, multiple))
        metrics = trainer.step({name: getattr(packed, name) for name in BATCH_FIELDS})
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


def rft(ctx: Context) -> RftRow:
    """Phase 1: collect trajectories from `rft.source`, train on the resolved ones."""
    c = ctx.config
    rng = np.random.default_rng(c.seed)  # the order of every epoch's steps
    started = time.perf_counter()
    source = c.rft.source
    path = ctx.run.trajectory_file("rft", 0)
    if source == "demonstrations":
        env = builder.episode_env(c)
        trajectories = []
        for task in tqdm(ctx.train_tasks, desc="demonstrations", leave=False):
            trajectories.append(demonstrate(task, ctx.built.tokenizer, env))
            write_trajectory(path, trajectories[-1])
    elif source == "policy":
        jobs = [(task, g) for task in ctx.train_tasks for g in range(c.rft.attempts)]
        sampling = Sampling(c.rollout.temperature, training=True)
        trajectories, _ = rollout(ctx, jobs, path, sampling, ("rft",), "rft")
    else:
        if not os.path.isfile(source):
            raise RunError(f"rft.source {source!r}: no such trajectories file")
        trajectories = list(read_trajectories(source))
    sequences = rft_sequences(trajectories, c.rft.mask_format_errors)
    if not sequences:
        raise RunError(f"rft.source {source!r} gave no successful trajectory to train on")
    trainer = builder.build_trainer(ctx.built, "rft", len(sequences))
    steps = []
    for _ in tqdm(range(c.rft.epochs), desc="rft epochs", leave=False):
        steps += train_on(ctx, trainer, sequences, c.rft.batch_size, rng, crash_at="rft")
    return RftRow(
        trajectories=len(trajectories),
        trained_on=len(sequences),
        steps=len(steps),
        loss_first=steps[0]["loss"],
        loss_last=steps[-1]["loss"],
        fill_ratio=mean(s["fill_ratio"] for s in steps),
        seconds=time.perf_counter() - started,
    )


def dapo_iteration(ctx: Context, index: int, trainer: Trainer) -> DapoRow:
    """Phase 2, one iteration: roll out G per task, advantages, filter, one pass of training."""
    c = ctx.config
    begun = time.perf_counter()
    rng = np.random.default_rng([c.seed, index])
    count = min(c.dapo.tasks_per_iteration, len(ctx.train_tasks))
    tasks = [ctx.train_tasks[i] for i in rng.choice(len(ctx.train_tasks), count, False)]
    jobs = [(task, g) for task in tasks for g in range(c.dapo.group_size)]
    trajectories, stats = rollout(
        ctx,
        jobs,
        ctx.run.trajectory_file("iter", index),
        Sampling(c.rollout.temperature, training=True),
        ("dapo", index),
        f"iteration {index} rollout",
        crash_at=f"rollout:{index}",
    )
    rollout_s = time.perf_counter() - begun
    usable = [t for t in trajectories if not t.infrastructure_error]
    advantages = group_advantages([t.reward for t in usable], [t.task_id for t in usable])
    sequences = dapo_sequences(usable, advantages)
    kept = [t for t, a in zip(usable, advantages, strict=True) if a != 0.0]
    started = time.perf_counter()
    recomputed = recomputed_logprobs(ctx.built.model, kept, ctx.built.mesh)
    gaps = [
        np.abs(r - np.asarray(t.logprobs))[np.asarray(t.loss_mask)]
        for r, t in zip(recomputed, kept, strict=True)
    ]
    if c.dapo.pi_old == "recompute":
        sequences = [
            dataclasses.replace(s, old_logprobs=r.tolist())
            for s, r in zip(sequences, recomputed, strict=True)
        ]
    recompute_s = time.perf_counter() - started
    started = time.perf_counter()
    steps = []
    if sequences:
        steps = train_on(ctx, trainer, sequences, c.dapo.batch_size, rng, f"train:{index}")
    applied = [s for s in steps if not s["skipped"]]
    return DapoRow(
        iteration=index,
        rollout=RolloutSummary.of(trajectories),
        filtered_fraction=1.0 - len(sequences) / max(1, len(usable)),
        optimizer_steps=len(steps),
        skipped_steps=len(steps) - len(applied),
        idle_fraction=stats.idle_fraction,
        logprob_gap_mean=mean(np.concatenate(gaps)) if gaps else 0.0,
        logprob_gap_max=float(max((g.max() for g in gaps if g.size), default=0.0)),
        seconds=time.perf_counter() - begun,
        rollout_s=rollout_s,
        recompute_s=recompute_s,
        train_s=time.perf_counter() - started,
        **{k: mean(s[k] for s in applied) for k in _STEP_MEANS},
    )


_STEP_MEANS = ("loss", "grad_norm", "entropy", "clip_low", "clip_high", "fill_ratio")
