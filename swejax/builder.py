"""From a config to what a run is made of: the one place where the sections meet the code.

    built = build(config)                      # mesh, model, tokenizer
    engine = build_engine(built, temperature=1.0, seed=0)
    runner = build_runner(built, engine)       # rollouts over the engine's slots
    trainer = build_trainer(built, "dapo")     # the DAPO optimizer step on the same weights

Every mode (train, eval, check, convert, validate-tasks) builds through these functions, and
the memory planner reads the same sections (`swejax.memory_plan.plan_spec`), so a config means
the same thing everywhere. A bad input (a checkpoint that is
not there, a mesh that does not divide the devices, a missing sandbox runtime) is a
`BuildError`, one line for the user.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Callable
from typing import Any, TypeVar

from swejax.config import Config
from swejax.errors import UserError

_Result = TypeVar("_Result")
logger = logging.getLogger("swejax.builder")


class BuildError(UserError):
    """A config that cannot be built as given (the message names what and why)."""


def from_user_input(failure: str, function: Callable[..., _Result], *args, **kwargs) -> _Result:
    """`function(*args, **kwargs)`, where a bad input (ValueError, missing file) is a user error
    whose message starts with `failure`."""
    try:
        return function(*args, **kwargs)
    except UserError:
        raise
    except (ValueError, FileNotFoundError) as error:
        raise BuildError(f"{failure}: {error}") from error


# --- mesh, model, tokenizer ----------------------------------------------------------------


@dataclasses.dataclass
class Built:
    """What every mode builds first."""

    config: Config
    mesh: Any  # jax.sharding.Mesh
    model: Any  # swejax.models.Qwen2, its weights on the mesh
    tokenizer: Any
    # Where decoding runs (swejax.sampling.RolloutLayout), None: over the training layout.
    layout: Any = None

    @property
    def model_config(self):
        return self.model.cfg


def make_mesh(config: Config, devices=None):
    from swejax import sharding

    try:
        return sharding.make_mesh(**config.mesh.shape(), devices=devices)
    except sharding.MeshError as error:
        raise BuildError(f"config.mesh: {error}") from error


def model_config(config: Config, check_backend: bool = True):
    """The model's `ModelConfig`: the checkpoint's config.json, else the preset, with the run's
    dtypes, remat policy and attention; checked against this backend unless `check_backend`
    is False (planning for hardware this machine lacks)."""
    from swejax.models import model_config_from

    return from_user_input(
        "cannot resolve config.model", model_config_from, config.model, check_backend
    )


def build_model(config: Config, mesh):
    """The model on `mesh`: the checkpoint's weights, else random ones from `config.seed`."""
    from swejax import models

    cfg = model_config(config)
    if not config.model.checkpoint:
        return models.build_model(cfg, mesh, seed=config.seed)
    return from_user_input(
        f"cannot load checkpoint {config.model.checkpoint}",
        models.load_hf_checkpoint,
        config.model.checkpoint,
        dtype=cfg.dtype,
        mesh=mesh,
        param_dtype=cfg.param_dtype,
        remat=cfg.remat,
        attention=cfg.attention,
    )


def tokenizer_dir(config: Config) -> str | None:
    """`config.tokenizer`, else the checkpoint's directory if it holds tokenizer files, else
    None (the built-in tokenizer)."""
    if config.tokenizer:
        return config.tokenizer
    checkpoint = config.model.checkpoint
    if checkpoint and os.path.isfile(os.path.join(checkpoint, "tokenizer.json")):
        return checkpoint
    return None


def load_tokenizer(config: Config, vocab_size: int):
    """The run's tokenizer, checked to fit the model's vocabulary."""
    from swejax import tokenizer as tok

    tokenizer = from_user_input(
        "cannot load the tokenizer", tok.load_tokenizer, tokenizer_dir(config)
    )
    if len(tokenizer) > vocab_size:
        raise BuildError(
            f"the tokenizer has {len(tokenizer)} tokens but the model's vocabulary is {vocab_size}"
        )
    return tokenizer


def build(config: Config) -> Built:
    """Join the run's processes (`swejax.distributed`: each checks the others run the same
    config), then mesh, model and tokenizer."""
    from swejax import distributed

    distributed.start(config.distributed)
    distributed.check_same_config(config)
    mesh = make_mesh(config)
    layout = rollout_layout(config, mesh)
    model = build_model(config, mesh)
    return Built(config, mesh, model, load_tokenizer(config, model.cfg.vocab_size), layout)


def rollout_layout(config: Config, mesh):
    """The devices decoding runs on (`engine.layout`): the rollout layout over the training
    mesh's devices, or None to decode over the training layout."""
    from swejax.sampling import rollout_layout as layout_of

    if config.engine.layout == "training":
        return None
    return from_user_input("config.engine", layout_of, mesh, config.engine.tensor)


# --- tasks and sandboxes -------------------------------------------------------------------


def require_runtime(runtime: str) -> None:
    """Fail at start, in one line, when the sandbox runtime cannot run on this machine."""
    from swejax.env.sandbox import bwrap_available

    if runtime == "bwrap" and not bwrap_available():
        raise BuildError(
            "the bwrap sandbox runtime needs bubblewrap, which is not installed: run "
            "`apt-get install bubblewrap` as root (or `bash tools/setup.sh --main`)"
        )


def load_tasks(config: Config, source: str | None = None) -> list:
    from swejax import tasks

    return from_user_input("cannot load tasks", tasks.load_source, source or config.tasks.source)


def split_tasks(config: Config, all_tasks: list) -> tuple[list, list]:
    """(training tasks, evaluation tasks) as the config's `tasks` section chooses them."""
    from swejax import tasks

    chosen = config.tasks
    return tasks.select_tasks(all_tasks, chosen.train, chosen.eval, chosen.eval_repos)


def episode_env(config: Config, runtime: str | None = None):
    """How the run's episodes run and are scored: its sandbox runtime, scaffold and reward.
    Each distinct submission of a task is graded once (`GradeMemo`)."""
    from swejax.env.grading import GradeMemo
    from swejax.rollout import EpisodeEnv

    runtime = runtime or config.tasks.runtime
    return EpisodeEnv(runtime, config.scaffold, config.dapo.l_thr, grader=GradeMemo())


# --- sampling ------------------------------------------------------------------------------


def build_engine(
    built: Built,
    temperature: float,
    top_k: int = 0,
    top_p: float = 1.0,
    repetition_penalty: float = 1.0,
    seed=0,
    training: bool = True,
):
    """An engine on the run's decode layout: this process's share of `engine.num_slots` and
    `engine.num_pages` (sized to the device memory where 0: `engine_config`) on the rollout
    layout's devices, or all of them over the training mesh. It decodes the weights a phase
    gives it (`decode_weights`, then `Engine.use_weights` and `warm_up`)."""
    from swejax.sampling import Engine, SamplingParams
    from swejax.tokenizer import im_end_id

    sampling = from_user_input(
        "bad decoding options", SamplingParams, temperature, top_k, top_p, repetition_penalty
    )
    engine_config = dataclasses.replace(
        engine_config_of(built, training), stop_tokens=(im_end_id(built.tokenizer),)
    )
    mesh = built.mesh if built.layout is None else built.layout.mesh
    return from_user_input(
        "config.engine", Engine, built.model, engine_config, sampling, mesh=mesh, seed=seed
    )


def engine_config_of(built: Built, training: bool = True):
    """The engine section with its sizes resolved (`swejax.memory_plan.fit_engine`, from the
    device memory `engine.memory_gib` or what the device reports, beside the training state:
    with its optimizer moments if `training`) and, on the rollout layout, cut to this
    process's share: each process decodes its own slots over its own pages."""
    import jax

    from swejax import memory_plan

    config = built.config
    spec = memory_plan.plan_spec(config, jax.device_count())
    shape = memory_plan.decode_shape(spec, jax.local_device_count())
    state = memory_plan.state_bytes(spec, with_optimizer=training)
    memory = device_memory(config)
    engine = from_user_input("config.engine", memory_plan.fit_engine, spec, shape, state, memory)
    processes = jax.process_count()
    sized = f"{memory / 2**30:.2f} GiB a device" if memory else "no memory figure"
    logger.info(
        "engine: %d slots and %d KV pages of %d tokens over %d %s of %d devices (%s)",
        engine.num_slots,
        engine.pool_pages,
        engine.page_size,
        shape.shards,
        "replicas" if built.layout is not None else "batch shards",
        shape.tensor,
        sized,
    )
    if built.layout is None or processes == 1:
        return engine
    for name, total in (("num_slots", engine.num_slots), ("num_pages", engine.pool_pages)):
        if total % processes:
            raise BuildError(
                f"engine.{name}={total} does not split evenly over the {processes} processes, "
                "each of which decodes its own share on its own devices"
            )
    return dataclasses.replace(
        engine, num_slots=engine.num_slots // processes, num_pages=engine.pool_pages // processes
    )


def device_memory(config: Config) -> int | None:
    """Bytes of one device's memory the engine sizes itself for: `engine.memory_gib` or what
    the device reports (a GPU's or TPU's allocator limit; a CPU reports none), the smaller
    where both are known; None where neither is."""
    import jax

    stats = jax.local_devices()[0].memory_stats() or {}
    known = [
        stats.get("bytes_limit"),
        config.engine.memory_gib and config.engine.memory_gib * 2**30,
    ]
    known = [int(x) for x in known if x]
    return min(known) if known else None


def decode_weights(built: Built):
    """The weights a phase decodes: the copy in the rollout layout (`swejax.sampling.
    decode_weights`; collective), or None to decode the training state in place."""
    from swejax.sampling import decode_weights as copy_of

    return None if built.layout is None else copy_of(built.model, built.layout)


def build_runner(built: Built, engine, runtime: str | None = None):
    from swejax.rollout import RolloutRunner

    env = episode_env(built.config, runtime)
    return RolloutRunner(engine, built.tokenizer, built.config.rollout, env)


# --- training ------------------------------------------------------------------------------


def build_trainer(built: Built, phase: str, num_sequences: int = 0):
    """The Trainer of a phase over the model's weights: "rft" (cross-entropy on the resolved
    trajectories' actions, warm-up then cosine over `num_sequences` x epochs) or "dapo" (the
    clipped surrogate, a constant learning rate)."""
    from swejax.train import Trainer, make_optimizer, warmup_cosine

    config = built.config
    if phase == "rft":
        rft = config.rft
        steps_per_epoch = math.ceil(max(1, num_sequences) / rft.batch_size)
        total = max(rft.warmup_steps + 1, rft.epochs * steps_per_epoch)
        schedule = warmup_cosine(rft.learning_rate, min(rft.warmup_steps, total - 1), total)
        tx = make_optimizer(config.optimizer, schedule, rft.weight_decay)
    else:
        tx = make_optimizer(config.optimizer, config.dapo.learning_rate, config.dapo.weight_decay)
    objective = _objective(config, phase)
    return Trainer(built.model, tx, objective, config.train.micro_batches, mesh=built.mesh)


def _objective(config: Config, phase: str):
    from swejax.train import Objective

    return Objective.of_phase(phase, config.dapo.eps_low, config.dapo.eps_high)


def check_row_length(config: Config, mesh) -> None:
    """Rows the ring's zigzag layout cannot split are refused before any work."""
    from swejax.models import attention_impl

    context = 1 if mesh is None else mesh.shape["context"]
    if attention_impl(config.model.attention).ring and config.row_length % (2 * context):
        raise BuildError(
            f"train rows of {config.row_length} tokens cannot take ring attention over "
            f"context={context}: the zigzag layout needs a multiple of {2 * context} "
            "(set train.row_length or engine.capacity)"
        )
