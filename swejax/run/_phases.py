"""The phases of a run: a rollout, an evaluation, RFT, and one DAPO iteration.

Each phase takes the run's `Context` (what was built, the run directory, the tasks) and returns
its typed metrics row; `swejax.run._loop` orders them, saves and resumes. The `eval` mode calls
`evaluate` on its own, so an evaluation means the same in both.

With many processes every process runs every phase: each rolls out its own tasks
(`swejax.run._processes`), the metrics come from every process's outcomes, and each trains on
its own trajectories as its rows of each global batch, every step holding the same sequences
as with one process.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Sequence

import numpy as np
from flax import nnx

from swejax import builder, distributed
from swejax.errors import UserError
from swejax.progress import Report, reported, this_process
from swejax.rl import (
    DapoSelection,
    TrainSequence,
    first_fit,
    pack,
    pass_metrics,
    rft_sequences,
    row_count_for,
)
from swejax.rollout import (
    RolloutStats,
    Trajectory,
    demonstrate,
    demonstration_env,
    read_trajectories,
    write_trajectory,
)
from swejax.run import _processes as processes
from swejax.run._crash import crash_point
from swejax.run._directory import RunDirectory
from swejax.run._rows import (
    DapoRow,
    DecodeSummary,
    EvalRow,
    PassMetrics,
    Progress,
    RftRow,
    RolloutSummary,
    mean,
)
from swejax.sampling import SamplingParams, require_unbiased
from swejax.sharding import activation_mesh
from swejax.tasks import Task
from swejax.train import BATCH_FIELDS, Trainer, global_rows, local_rows, token_logprobs


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
    own distribution, temperature only; an evaluation may filter or penalize it."""

    temperature: float
    training: bool
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0


def rollout(
    ctx: Context, jobs, path: str | None, sampling: Sampling, draw: tuple, desc: str, crash_at=""
) -> tuple[list[Trajectory], RolloutStats]:
    """Every (task, group) job rolled out with the current weights; trajectories on disk as
    they finish. `draw` names the rollout's random streams (phase, iteration): with the run's
    seed, the job and the token position it fixes every draw. The weights are copied into the
    rollout layout first (collective), and the copy and the engine's KV pools are released
    afterwards. Each process rolls out its own tasks' jobs and returns those; the stats carry
    the copy's bytes and seconds."""
    key = (sampling.temperature, sampling.top_k, sampling.top_p, sampling.repetition_penalty)
    if sampling.training:  # a filtered sampler would bias the DAPO importance ratio
        require_unbiased(SamplingParams(*key))
    seed = ctx.config.seed
    engine = ctx.engines.get(key)
    if engine is None:
        engine = builder.build_engine(ctx.built, *key, seed=seed, training=ctx.run is not None)
        ctx.engines[key] = engine
    weights = builder.decode_weights(ctx.built)
    engine.use_weights(None if weights is None else weights.params)
    engine.reseed(seed)
    mine = processes.my_jobs(jobs)
    try:
        engine.warm_up()
        runner = builder.build_runner(ctx.built, engine)

        def finished(_: Trajectory) -> None:
            # The engine's count: every token sampled so far, also of episodes still running.
            report.advance(tokens=runner.stats.sampled_tokens)
            crash_point(crash_at)  # after the first trajectory is on disk

        with Report(desc, len(mine), "episode", process=this_process()) as report:
            trajectories, stats = runner.run(mine, path, on_trajectory=finished, draw=draw)
    finally:
        # The KV pools are as large as the train step's activations at long context, and the
        # copy as large as the weights: neither lives while the train step runs (the next
        # rollout's reseed allocates the pools again, and copies the weights anew).
        engine.release()
        engine.use_weights(None)
        if weights is not None:
            weights.drop()
    if weights is not None:
        stats.copy_bytes, stats.copy_s = weights.bytes_per_device, weights.seconds
    return trajectories, stats


def decode_summary(stats: RolloutStats) -> DecodeSummary:
    """How every process's share of a phase decoded (collective)."""
    preemptions, swapped = processes.global_sums(stats.preemptions, stats.swapped_tokens)
    return DecodeSummary(
        decode_copy_bytes=processes.global_max(int(stats.copy_bytes)),
        decode_copy_s=processes.global_max(float(stats.copy_s)),
        preemptions=int(preemptions),
        swapped_tokens=int(swapped),
    )


def outcomes_by_task(tasks: Sequence[Task], runs: int, outcomes) -> dict[str, list[bool]]:
    """task -> resolved per run (a run that did not finish counts as unresolved), from the
    episodes' trajectories or `Outcome`s."""
    by_task = {task.instance_id: [False] * runs for task in tasks}
    for o in outcomes:
        by_task[o.task_id][o.group] = o.resolved
    return by_task


def evaluate(
    ctx: Context, tasks: Sequence[Task], runs: int, sampling: Sampling, index: int, path, desc
) -> tuple[PassMetrics, RolloutSummary, DecodeSummary, list[Trajectory]]:
    """Pass@1 (mean of `runs` runs per task, with its standard error) and Pass@runs over every
    process's episodes; `index` is the run's evaluation count (its draws are ("eval", index,
    task, run)). The trajectories returned are this process's."""
    jobs = [(task, run) for task in tasks for run in range(runs)]
    trajectories, stats = rollout(ctx, jobs, path, sampling, ("eval", index), desc)
    outcomes = processes.gathered_outcomes(trajectories, processes.job_order(jobs))
    passes = PassMetrics.from_dict(pass_metrics(outcomes_by_task(tasks, runs, outcomes)))
    return passes, RolloutSummary.of(outcomes), decode_summary(stats), trajectories


def evaluation(ctx: Context, progress: Progress, stage: str) -> EvalRow:
    """The run's evaluation on its evaluation tasks; `stage` says what training came before:
    initial, rft or dapo."""
    c = ctx.config
    index = progress.evaluations
    started = time.perf_counter()
    passes, summary, decoding, _ = evaluate(
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
    return EvalRow(index, stage, progress.iteration, passes, summary, seconds, decoding)


# --- training ------------------------------------------------------------------------------


def train_on(
    ctx: Context,
    trainer: Trainer,
    sequences: list[TrainSequence],
    batch_size: int,
    rng,
    crash_at,
    keys: Sequence[tuple[str, int]],
    order: dict,
    report: Report | None = None,
) -> list[dict]:
    """One pass: shuffled optimizer steps of `batch_size` trajectories; metrics of each step.

    `sequences` are this process's, `keys[i]` the (task id, sample) of sequence i, `order`
    the phase's job order. The shuffle is over every process's sequences in job order, so a
    step trains on the same sequences whatever the number of processes; each process packs
    its own of them into its rows of the step's global batch (as many rows on each). `report`
    counts the steps."""
    row_length = ctx.config.row_length
    count = distributed.process_count()
    rows_multiple = ctx.config.train.micro_batches * _batch_shards(ctx.built.mesh)
    if rows_multiple % count:
        raise RunError(
            f"{count} processes cannot split a batch of a multiple of {rows_multiple} rows "
            "(train.micro_batches x the mesh's data x fsdp): each process packs its own rows"
        )
    everyone = processes.gathered_keys(keys, order)
    by_key = dict(zip(keys, sequences, strict=True))
    permutation = rng.permutation(len(everyone))
    steps = []
    for begin in range(0, len(permutation), batch_size):
        chosen = [everyone[i] for i in permutation[begin : begin + batch_size]]
        chunk = [by_key[k] for k in chosen if k in by_key]
        rows = processes.global_max(len(first_fit([len(s.tokens) for s in chunk], row_length)))
        packed = pack(chunk, row_length, row_count_for(rows, rows_multiple // count))
        metrics = trainer.step({name: getattr(packed, name) for name in BATCH_FIELDS})
        metrics["fill_ratio"] = float(processes.global_sums(packed.fill_ratio)[0] / count)
        steps.append(metrics)
        if report is not None:
            report.advance()
        crash_point(crash_at)  # after the first optimizer step changed the weights
    return steps


def _batch_shards(mesh) -> int:
    return mesh.shape["data"] * mesh.shape["fsdp"] if mesh is not None else 1


_forward_logprobs = nnx.jit(token_logprobs)


def recomputed_logprobs(model, trajectories: Sequence[Trajectory], mesh) -> list[np.ndarray]:
    """pi_old by a forward pass of the current weights over each trajectory, packed into rows
    of the longest one's power of two (few shapes to compile), a row per batch shard per call;
    with many processes each fills its rows of every call (collective)."""
    count = distributed.process_count()
    lengths = [len(t.tokens) for t in trajectories]
    longest = processes.global_max(max(lengths, default=1))
    row_length = 1 << max(0, longest - 1).bit_length()
    groups = first_fit(lengths, row_length)
    per_call = max(1, _batch_shards(mesh) // count)
    calls = processes.global_max(math.ceil(len(groups) / per_call))
    out: list[np.ndarray] = [np.zeros(0, np.float32)] * len(trajectories)
    for c in range(calls):
        members = [i for group in groups[c * per_call : (c + 1) * per_call] for i in group]
        sequences = [
            TrainSequence(trajectories[i].tokens, trajectories[i].loss_mask, lengths[i] * [0.0], 0)
            for i in members
        ]
        packed = pack(sequences, row_length, per_call)  # the same rows as `groups` gave them
        fields = (packed.tokens, packed.positions, packed.segment_ids)
        with activation_mesh(mesh):
            logprobs, _ = _forward_logprobs(model, *(global_rows(mesh, x) for x in fields))
        logprobs = local_rows(logprobs)
        for i, (row, start, n) in zip(members, packed.placement, strict=True):
            out[i] = logprobs[row, start : start + n]
    return out


def rft(ctx: Context) -> RftRow:
    """Phase 1: collect trajectories from `rft.source`, train on the resolved ones."""
    c = ctx.config
    rng = np.random.default_rng(c.seed)  # the order of every epoch's steps
    started = time.perf_counter()
    source = c.rft.source
    path = ctx.run.trajectory_file("rft", 0)
    decoding = DecodeSummary()
    if source == "demonstrations":
        # Group 0 goes straight to the fix; group 1, with detours, looks at the code first.
        detour = c.rft.detour_turns
        env = demonstration_env(builder.episode_env(c), ctx.train_tasks, detour)
        groups = (0, 1) if detour else (0,)
        jobs = [(task, g) for task in ctx.train_tasks for g in groups]
        trajectories = []
        mine = processes.my_jobs(jobs)
        for task, g in reported(mine, "demonstrations", "episode", process=this_process()):
            trajectories.append(demonstrate(task, ctx.built.tokenizer, env, g, detour if g else 0))
            write_trajectory(path, trajectories[-1])
        order = processes.job_order(jobs)
    elif source == "policy":
        jobs = [(task, g) for task in ctx.train_tasks for g in range(c.rft.attempts)]
        sampling = Sampling(c.rollout.temperature, training=True)
        trajectories, stats = rollout(ctx, jobs, path, sampling, ("rft",), "rft")
        decoding = decode_summary(stats)
        order = processes.job_order(jobs)
    else:
        if not os.path.isfile(source):
            raise RunError(f"rft.source {source!r}: no such trajectories file")
        trajectories = list(read_trajectories(source))
        keys = [(t.task_id, t.group) for t in trajectories]
        order = {key: i for i, key in enumerate(dict.fromkeys(keys))}
        kept = set(processes.mine(list(dict.fromkeys(t.task_id for t in trajectories))))
        trajectories = [t for t in trajectories if t.task_id in kept]
    sequences = rft_sequences(trajectories, c.rft.mask_format_errors)
    keys = [(t.task_id, t.group) for t in trajectories if t.resolved and not t.infrastructure_error]
    total_trajectories, total_sequences = processes.global_sums(len(trajectories), len(keys))
    if not total_sequences:
        raise RunError(f"rft.source {source!r} gave no successful trajectory to train on")
    trainer = builder.build_trainer(ctx.built, "rft", int(total_sequences))
    steps = []
    # Every process takes every step (each its rows of the batch): the same count on each.
    per_epoch = math.ceil(int(total_sequences) / c.rft.batch_size)
    with Report("rft", c.rft.epochs * per_epoch, "step", process=this_process()) as report:
        for _ in range(c.rft.epochs):
            steps += train_on(
                ctx, trainer, sequences, c.rft.batch_size, rng, "rft", keys, order, report
            )
    return RftRow(
        trajectories=int(total_trajectories),
        trained_on=int(total_sequences),
        steps=len(steps),
        loss_first=steps[0]["loss"],
        loss_last=steps[-1]["loss"],
        fill_ratio=mean(s["fill_ratio"] for s in steps),
        seconds=time.perf_counter() - started,
        decoding=decoding,
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
    decoding = decode_summary(stats)
    order = processes.job_order(jobs)
    # A task's whole group is on this process: its advantages are local.
    selection = DapoSelection.of(trajectories)
    usable, sequences, kept = selection.usable, selection.sequences, selection.kept
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
    gap = np.concatenate(gaps) if gaps else np.zeros(0)
    positive, weighted, action_tokens = _advantage_sums(selection)
    totals = processes.global_sums(
        len(usable), len(sequences), gap.sum(), gap.size, positive, weighted, action_tokens
    )
    usable_total, sequences_total, gap_sum, gap_count, positive, weighted, action_tokens = totals
    gap_max = processes.global_max(float(gap.max()) if gap.size else 0.0)
    keys = [(t.task_id, t.group) for t in kept]
    steps = []
    if sequences_total:
        steps = train_on(
            ctx, trainer, sequences, c.dapo.batch_size, rng, f"train:{index}", keys, order
        )
    applied = [s for s in steps if not s["skipped"]]
    idle = processes.global_sums(stats.idle_fraction)[0] / distributed.process_count()
    return DapoRow(
        iteration=index,
        rollout=RolloutSummary.of(processes.gathered_outcomes(trajectories, order)),
        filtered_fraction=1.0 - sequences_total / max(1, usable_total),
        optimizer_steps=len(steps),
        skipped_steps=len(steps) - len(applied),
        idle_fraction=float(idle),
        logprob_gap_mean=float(gap_sum / gap_count) if gap_count else 0.0,
        logprob_gap_max=gap_max,
        advantage_positive=float(positive / sequences_total) if sequences_total else 0.0,
        advantage_token_mean=float(weighted / action_tokens) if action_tokens else 0.0,
        seconds=time.perf_counter() - begun,
        rollout_s=rollout_s,
        recompute_s=recompute_s,
        train_s=time.perf_counter() - started,
        **{k: mean(s[k] for s in applied) for k in _STEP_MEANS},
        decoding=decoding,
    )


def _advantage_sums(selection: DapoSelection) -> tuple[int, float, int]:
    """(kept trajectories with a positive advantage, the sum of advantage x action tokens over
    the kept ones, their action tokens), this process's share."""
    kept_advantages = selection.advantages[selection.advantages != 0.0]
    tokens = np.array([sum(t.loss_mask) for t in selection.kept], np.float64)
    positive = int((kept_advantages > 0).sum())
    return positive, float((kept_advantages * tokens).sum()), int(tokens.sum())


_STEP_MEANS = ("loss", "grad_norm", "entropy", "clip_low", "clip_high", "fill_ratio")
