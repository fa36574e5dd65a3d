"""The run configuration as typed sections: one frozen dataclass per stage, the one home of its
defaults.

Each section is named by its key in the config (`engine`, `rollout`, ...) and is what its
stage takes: the engine gets `EngineConfig`, an episode `ScaffoldConfig`, and so on, so a new
setting is a field here and a read where it is used. Defaults are the paper's values where the
paper gives one (docs/method.md); where it is silent they are what runs anywhere. The demo (the
embedded default, `swejax.config.demo_config`) sets its own values on top.

Every section checks its own values when it is built and raises ValueError naming the key;
`Config` checks what spans sections. This module imports nothing heavy, so the command line
reads and checks a config before JAX loads.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

DTYPES = ("float32", "bfloat16")
RUNTIMES = ("bwrap", "docker")
PI_OLD = ("sampler", "recompute")
LAYOUTS = ("rollout", "training")
# A field with this metadata is filled in by the builder (from the tokenizer, say), not set in
# a config: it has no config key.
NOT_A_KEY = {"config_key": False}


def _positive(section, *names: str) -> None:
    for name in names:
        value = getattr(section, name)
        if not value > 0:
            raise ValueError(f"config key '{section.KEY}.{name}' must be positive, got {value!r}")


def _at_least(section, minimum, *names: str) -> None:
    for name in names:
        value = getattr(section, name)
        if value < minimum:
            raise ValueError(
                f"config key '{section.KEY}.{name}' must be at least {minimum}, got {value!r}"
            )


def _one_of(section, name: str, allowed: tuple[str, ...]) -> None:
    value = getattr(section, name)
    if value not in allowed:
        raise ValueError(
            f"config key '{section.KEY}.{name}' must be one of {', '.join(allowed)}, got {value!r}"
        )


@dataclasses.dataclass(frozen=True)
class ModelOptions:
    """Which model, and how it runs (its shapes come from the preset or the checkpoint)."""

    KEY: ClassVar[str] = "model"
    preset: str = "qwen2.5-72b"  # "tiny", "small", "qwen2.5-0.5b", ..., "qwen2.5-72b"
    checkpoint: str = ""  # Hugging Face directory; its config.json wins over the preset
    dtype: str = "bfloat16"  # compute dtype
    param_dtype: str = "float32"  # weights and AdamW state
    remat: str = "full"  # remat policy by name (swejax.models.remat)
    attention: str = "reference"  # implementation by name (swejax.models.attention_impls)

    def __post_init__(self) -> None:
        _one_of(self, "dtype", DTYPES)
        _one_of(self, "param_dtype", DTYPES)
        # The names of policies and implementations live with the model code.
        from swejax.models.attention_impls import ATTENTION_IMPLS
        from swejax.models.remat import REMAT_POLICIES

        _one_of(self, "remat", tuple(REMAT_POLICIES))
        _one_of(self, "attention", tuple(ATTENTION_IMPLS))


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Device mesh sizes; -1 on one axis takes every device the others leave."""

    KEY: ClassVar[str] = "mesh"
    data: int = 1  # pure data parallelism: batch split, weights replicated
    fsdp: int = -1  # batch split, weights sharded (ZeRO-3)
    tensor: int = 1  # heads, MLP hidden and vocabulary split
    context: int = 1  # sequence split (ring attention)

    def __post_init__(self) -> None:
        sizes = dataclasses.asdict(self)
        if any(size < 1 and size != -1 for size in sizes.values()):
            raise ValueError(f"mesh axis sizes must be positive or -1, got {sizes}")
        if list(sizes.values()).count(-1) > 1:
            raise ValueError(f"at most one mesh axis may be -1, got {sizes}")

    def shape(self) -> dict[str, int]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
    """The processes of one run (JAX multi-controller: one process per host or per GPU, each
    running the same program). All empty: detect a cluster (a TPU pod, SLURM, Open MPI) and
    join it, or run as the only process when there is none (docs/launching.md)."""

    KEY: ClassVar[str] = "distributed"
    coordinator: str = ""  # host:port of process 0's coordination service
    num_processes: int = 0  # 0: from the cluster (or 1 without one)
    process_id: int = -1  # this process, 0 .. num_processes - 1; -1: from the cluster
    timeout_s: int = 120  # wait this long for every process to join; a peer silent for a
    # quarter of it is lost (swejax.watchdog)

    def __post_init__(self) -> None:
        _at_least(self, 0, "num_processes")
        _at_least(self, -1, "process_id")
        _positive(self, "timeout_s")
        explicit = bool(self.coordinator), self.num_processes > 0, self.process_id >= 0
        if any(explicit) and not all(explicit):
            raise ValueError(
                "config keys distributed.coordinator, distributed.num_processes and "
                "distributed.process_id go together: set all three, or none to detect the cluster"
            )
        if self.coordinator and not _is_host_port(self.coordinator):
            raise ValueError(
                f"config key 'distributed.coordinator' must be host:port, got {self.coordinator!r}"
            )
        if all(explicit) and self.process_id >= self.num_processes:
            raise ValueError(
                f"distributed.process_id={self.process_id} must be below "
                f"distributed.num_processes={self.num_processes}"
            )


def _is_host_port(address: str) -> bool:
    host, _, port = address.rpartition(":")
    return bool(host) and port.isdigit() and 0 < int(port) < 65536


@dataclasses.dataclass(frozen=True)
class TasksConfig:
    """Where tasks come from, which train and which evaluate, and what runs them."""

    KEY: ClassVar[str] = "tasks"
    # Comma-separated sources, each "builtin", a JSONL file of SWE-bench records (a synthesized
    # set too), or "hf:NAME:SPLIT"; their tasks together.
    source: str = "builtin"
    train: str = ""  # comma-separated instance ids; "": every task not held out
    eval: str = ""  # held-out instance ids for evaluation; "": the training tasks
    eval_repos: str = ""  # comma-separated repositories whose every task is held out
    runtime: str = "docker"  # sandbox runtime: docker (the task's image) or bwrap (local)
    # A finished run (runs/<name>) whose DAPO attempts curate the training tasks, as between
    # the paper's stages: drop those solved in at least 2/3 of attempts and those never solved.
    curate_from: str = ""

    def __post_init__(self) -> None:
        _one_of(self, "runtime", RUNTIMES)


@dataclasses.dataclass(frozen=True)
class ScaffoldConfig:
    """The agent-computer interface of an episode (swejax.env.scaffold)."""

    KEY: ClassVar[str] = "scaffold"
    max_turns: int = 40  # T_max: replies per episode (stage 1: 40, stage 2: 80)
    window: int = 100  # lines shown by open / goto / scroll (as in SWE-agent)
    max_observation_chars: int = 10_000  # longer outputs keep their head and tail
    command_timeout: float = 120.0  # seconds per command
    prompts: str = ""  # prompt set: "" (the full prompts), "compact", or a folder of templates

    def __post_init__(self) -> None:
        _positive(self, "max_turns", "window", "max_observation_chars", "command_timeout")


@dataclasses.dataclass(frozen=True)
class EngineConfig:
    """The generation engine: slots over one paged KV cache (swejax.sampling)."""

    KEY: ClassVar[str] = "engine"
    # Where decoding runs (swejax.sampling._layout): "rollout", a copy of the weights in the
    # compute dtype laid out for decoding (tensor parallelism inside a host, every other device
    # a replica, each process decoding its own slots: no collective across hosts), made before
    # each phase that samples and dropped before training; or "training", over the training
    # state itself (no copy, but a step gathers FSDP-split weights across hosts).
    layout: str = "rollout"
    tensor: int = 0  # devices per rollout replica; 0: the training mesh's tensor, cut to a host
    # Episodes decoding at once over all processes (more than the pool holds at once wait
    # preempted, their keys and values on the host); 0: as many as the pool holds at
    # `episode_tokens` each.
    num_slots: int = 64
    capacity: int = 65_536  # longest sequence a slot holds, prompt and replies together
    page_size: int = 64  # tokens per KV page
    # Pages in the pool over all batch shards (a multiple of their number: each shard owns
    # num_pages / shards of them); 0: as many as the device memory holds beside the training
    # state and the decode copy (`memory_gib`), or, where that is unknown (a CPU), every slot
    # at full capacity.
    num_pages: int = 0
    memory_gib: float = 0.0  # device memory to size the pool for; 0: what the device reports
    episode_tokens: int = 0  # what an episode is expected to reach, for num_slots=0; 0: capacity/2
    chunk: int = 512  # tokens per slot per ingest call (at most the capacity)
    # Slots fed together by one ingest call; on a mesh, rounded up to a multiple of the batch
    # shards (each shard's rows come from its own slots).
    ingest_rows: int = 8
    steps_per_call: int = 16  # decode steps per host round trip
    # Copy the layer weights out of the stacked arrays once per decode call rather than once
    # per step (Qwen2.split_layer_weights): much faster decode, for one extra copy of the layer
    # weights in memory while a decode call runs.
    split_layer_weights: bool = True
    stop_tokens: tuple[int, ...] = dataclasses.field(default=(), metadata=NOT_A_KEY)

    def __post_init__(self) -> None:
        _positive(self, "capacity", "page_size", "chunk", "ingest_rows", "steps_per_call")
        _at_least(self, 0, "num_slots", "num_pages", "tensor", "memory_gib", "episode_tokens")
        _one_of(self, "layout", LAYOUTS)

    @property
    def pages_per_slot(self) -> int:
        return -(-self.capacity // self.page_size)

    @property
    def pool_pages(self) -> int:
        return self.num_pages or self.num_slots * self.pages_per_slot

    @property
    def ingest_chunk(self) -> int:
        """Tokens per row of an ingest call: `chunk`, or less for a short capacity."""
        return min(self.chunk, self.capacity)


@dataclasses.dataclass(frozen=True)
class RolloutConfig:
    """Episodes over the engine's slots (swejax.rollout)."""

    KEY: ClassVar[str] = "rollout"
    max_reply_tokens: int = 4096  # per assistant turn
    workers: int = 64  # sandbox commands and gradings at once (the paper: a pod per agent)
    temperature: float = 1.0  # RL rollouts sample the policy as it is: no other filter

    def __post_init__(self) -> None:
        _positive(self, "max_reply_tokens", "workers")
        _at_least(self, 0.0, "temperature")


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """AdamW and clipping, shared by both phases (each sets its learning rate and decay)."""

    KEY: ClassVar[str] = "optimizer"
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    grad_clip: float = 1.0  # global-norm clipping of each step's gradient

    def __post_init__(self) -> None:
        _positive(self, "eps", "grad_clip")
        if not (0.0 <= self.b1 < 1.0 and 0.0 <= self.b2 < 1.0):
            raise ValueError(f"optimizer.b1 and b2 must be in [0, 1), got {self.b1}, {self.b2}")


@dataclasses.dataclass(frozen=True)
class RftConfig:
    """Phase 1, rejection fine-tuning."""

    KEY: ClassVar[str] = "rft"
    # "" (skip), "policy" (the model's own successful rollouts: the paper's), "demonstrations"
    # (gold patches written through the scaffold), or a trajectories JSONL file.
    source: str = "policy"
    attempts: int = 10  # rollouts per task when the source is the policy
    epochs: int = 1
    batch_size: int = 64  # trajectories per optimizer step
    learning_rate: float = 5e-6  # peak, after warm-up; cosine to 0
    warmup_steps: int = 10
    weight_decay: float = 0.1
    mask_format_errors: bool = True  # turns with a format error stay in context, out of the loss
    # Demonstrations only: when > 0, each task is also demonstrated the long way, after this
    # many turns that only read the code; all demonstrations then get the turns they need.
    detour_turns: int = 0

    def __post_init__(self) -> None:
        _positive(self, "attempts", "epochs", "batch_size", "learning_rate")
        _at_least(self, 0, "warmup_steps", "weight_decay", "detour_turns")


@dataclasses.dataclass(frozen=True)
class DapoConfig:
    """Phase 2, multi-turn DAPO (stage 1 values; stage 2 changes some)."""

    KEY: ClassVar[str] = "dapo"
    iterations: int = 100
    tasks_per_iteration: int = 300  # stage 2: 100
    group_size: int = 10  # G rollouts per task
    batch_size: int = 128  # trajectories per optimizer step (stage 2: 256)
    eps_low: float = 0.2
    eps_high: float = 0.3  # stage 2: 0.26
    learning_rate: float = 1e-6
    weight_decay: float = 0.1
    l_thr: int = 10  # length penalty threshold in turns
    pi_old: str = "sampler"  # "sampler" logprobs, or "recompute" with a forward pass

    def __post_init__(self) -> None:
        _at_least(self, 0, "iterations", "l_thr", "weight_decay", "eps_low", "eps_high")
        _positive(self, "tasks_per_iteration", "group_size", "batch_size", "learning_rate")
        _one_of(self, "pi_old", PI_OLD)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """What both phases' optimizer steps share, and where a run's weights come from."""

    KEY: ClassVar[str] = "train"
    row_length: int = 0  # tokens per packed row; 0: engine.capacity
    micro_batches: int = 1  # gradient accumulation steps per optimizer step
    checkpoint_keep: int = 2  # checkpoints kept in runs/<name>/checkpoints
    # A run directory whose last parameters a new run starts from (stage 2 from stage 1);
    # ignored once this run has a checkpoint of its own.
    init_from: str = ""

    def __post_init__(self) -> None:
        _at_least(self, 0, "row_length")
        _positive(self, "micro_batches", "checkpoint_keep")


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Evaluations: before training, after RFT, every few DAPO iterations, at the end."""

    KEY: ClassVar[str] = "eval"
    every: int = 0  # DAPO iterations between evaluations; 0: only before and after
    runs: int = 10  # k runs per task: Pass@1 is their mean, Pass@k the unbiased estimate
    temperature: float = 1.0

    def __post_init__(self) -> None:
        _at_least(self, 0, "every", "runs", "temperature")


@dataclasses.dataclass(frozen=True)
class Config:
    """A whole run: a name, a seed, and every stage's section."""

    name: str = "run"  # the run writes <run_dir>/<name>/
    seed: int = 0
    run_dir: str = "runs"
    tokenizer: str = ""  # tokenizer directory; "": the checkpoint's, else the built-in one
    model: ModelOptions = dataclasses.field(default_factory=ModelOptions)
    mesh: MeshConfig = dataclasses.field(default_factory=MeshConfig)
    distributed: DistributedConfig = dataclasses.field(default_factory=DistributedConfig)
    tasks: TasksConfig = dataclasses.field(default_factory=TasksConfig)
    scaffold: ScaffoldConfig = dataclasses.field(default_factory=ScaffoldConfig)
    engine: EngineConfig = dataclasses.field(default_factory=EngineConfig)
    rollout: RolloutConfig = dataclasses.field(default_factory=RolloutConfig)
    optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)
    rft: RftConfig = dataclasses.field(default_factory=RftConfig)
    dapo: DapoConfig = dataclasses.field(default_factory=DapoConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ValueError(f"name must be a non-empty directory name, got {self.name!r}")
        turns = self.scaffold.max_turns
        if not 0 <= self.dapo.l_thr < turns:
            raise ValueError(
                f"dapo.l_thr={self.dapo.l_thr} must be at least 0 and below "
                f"scaffold.max_turns={turns}: the length penalty grows from l_thr turns to the "
                "turn limit"
            )
        if self.dapo.iterations and self.rollout.temperature <= 0:
            raise ValueError("rollout.temperature must be positive for DAPO rollouts")

    @property
    def row_length(self) -> int:
        """Tokens per packed training row."""
        return self.train.row_length or self.engine.capacity
