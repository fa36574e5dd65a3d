"""A training run from start to end: evaluate, RFT, evaluate, DAPO iterations with evaluations,
in one run directory that a re-run resumes.

An iteration counts once its checkpoint is written. A run killed at any moment restarts from
the last checkpoint: the phase in flight is redone from its start (its partial trajectory file
and any metrics row past the checkpoint are discarded), and no finished one is repeated.
"""

from __future__ import annotations

import logging
import os

from swejax import builder
from swejax.progress import reported, this_process
from swejax.run import _phases as phases
from swejax.run._crash import crash_point
from swejax.run._curation import curated_tasks
from swejax.run._directory import RunDirectory
from swejax.run._rows import Progress, Row
from swejax.run.checkpoints import RunCheckpoints, restore_params

logger = logging.getLogger("swejax.run")


def open_run(built: builder.Built, train_tasks, eval_tasks) -> phases.Context:
    """The run directory of `built.config` and the tasks it trains on (curated against the last
    stage when `tasks.curate_from` is set), after every check that needs no work."""
    config = built.config
    builder.check_row_length(config, built.mesh)
    run = RunDirectory(config)
    run.log_to_file()
    train_tasks = list(train_tasks)
    if config.tasks.curate_from:
        record = run.pool if run.leader else None
        train_tasks = curated_tasks(train_tasks, config.tasks.curate_from, record)
    return phases.Context(built, run, train_tasks, list(eval_tasks))


def train(ctx: phases.Context) -> list[Row]:
    """Run (or resume) the whole run; every row of its metrics at the end."""
    c, model = ctx.config, ctx.built.model
    checkpoints = RunCheckpoints(ctx.run.checkpoints, c.train.checkpoint_keep)
    trainer = builder.build_trainer(ctx.built, "dapo")
    resumed = checkpoints.restore(model, trainer.opt_state)
    progress, step = Progress(), 0
    if resumed is not None:
        progress, trainer.opt_state, step = resumed
        logger.info("resuming from checkpoint %d: %s", step, progress)
    elif c.train.init_from:  # a new stage starts from the last one's weights
        source = os.path.join(c.train.init_from, "checkpoints")
        logger.info("starting from %s, step %d", source, restore_params(source, model))
    ctx.run.keep_rows(progress)
    evaluating = bool(ctx.eval_tasks and c.eval.runs)
    if evaluating and progress.evaluations == 0:
        # Kept with the next checkpoint; a run killed before it evaluates again.
        ctx.run.append(phases.evaluation(ctx, progress, "initial"))
    if c.rft.source and not progress.rft_done:
        ctx.run.append(phases.rft(ctx))
        progress.rft_done = True
        if evaluating:
            ctx.run.append(phases.evaluation(ctx, progress, "rft"))
        step += 1
        trainer = builder.build_trainer(ctx.built, "dapo")  # a fresh optimizer for phase 2
        checkpoints.save(step, model, trainer.opt_state, progress)
    remaining = range(progress.iteration, c.dapo.iterations)
    done = progress.iteration  # a resumed run's: its time left counts this session's pace
    for index in reported(remaining, "dapo", "iteration", done=done, process=this_process()):
        row = phases.dapo_iteration(ctx, index, trainer)
        progress.iteration = index + 1
        step += 1
        # The row first: it counts once the checkpoint lands (a run killed in between drops
        # it on restore and redoes the iteration), so a finished iteration keeps its row.
        ctx.run.append(row)
        checkpoints.save(step, model, trainer.opt_state, progress)
        crash_point(f"checkpoint:{index}")  # the write is in flight
        last = index == c.dapo.iterations - 1
        due = last or (c.eval.every and (index + 1) % c.eval.every == 0)
        if evaluating and due:
            ctx.run.append(phases.evaluation(ctx, progress, "dapo"))
            step += 1
            checkpoints.save(step, model, trainer.opt_state, progress)
    checkpoints.wait()
    rows = ctx.run.rows()
    if ctx.run.leader:
        from swejax.plots import write_plots  # matplotlib, only once the run is done
        from swejax.report import write_report

        write_report(ctx.run.report, rows, c, write_plots(rows, ctx.run.plots))
    return rows
