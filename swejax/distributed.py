"""The processes of one run: joining them (JAX multi-controller), and the few host-side
exchanges between them.

On a pod every host (or every GPU) runs one Python process with the same command; each sees
its own devices, and a jitted program over the global mesh runs on all of them at once. Before
JAX touches a device, `start` joins the processes through process 0's coordination service:
explicitly (`distributed.coordinator`, `num_processes`, `process_id`), from the cluster's
environment (a TPU pod, SLURM, Open MPI), or not at all when there is one process. On CPU the
collectives go over gloo.

Host-side exchanges (`allgather`, `all_equal_config`) are small: counts, flags, statistics and
one config. Everything big (parameters, batches, the KV cache) moves only inside jitted
programs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time

import numpy as np

from swejax.config import Config, DistributedConfig
from swejax.errors import UserError

logger = logging.getLogger("swejax.distributed")

# Environment variables that say a cluster launched this process with peers.
_CLUSTER_SIZE_VARS = ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE")
_TPU_HOSTS_VAR = "TPU_WORKER_HOSTNAMES"


class DistributedError(UserError):
    """The processes of a run cannot join or do not agree."""


def cluster_detected() -> bool:
    """Whether the environment names peers: more than one SLURM task or MPI rank, or a Cloud
    TPU VM (JAX's own detection; a one-host slice joins as one process)."""
    for name in _CLUSTER_SIZE_VARS:
        if int(os.environ.get(name, "1") or 1) > 1:
            return True
    try:  # JAX's cluster registry is not public API: fall back to the worker list if it moves
        from jax._src import clusters

        tpu = [c for c in clusters.ClusterEnv._cluster_types if "Tpu" in c.__name__]
        return any(c.is_env_present() for c in tpu)
    except (ImportError, AttributeError):
        return len([h for h in os.environ.get(_TPU_HOSTS_VAR, "").split(",") if h]) > 1


def _is_joined() -> bool:
    from jax._src import distributed  # the one place JAX records that it joined

    return distributed.global_state.client is not None


def start(cfg: DistributedConfig) -> None:
    """Join the run's processes (once per process; later calls do nothing). Must run before
    anything touches a JAX device."""
    import jax

    if _is_joined():
        return
    explicit = cfg.num_processes > 0
    if not explicit and not cluster_detected():
        return  # one process, nothing to join
    if explicit and cfg.num_processes == 1:
        return
    # The CPU backend's collectives between processes (a JAX without the option has one).
    with contextlib.suppress(AttributeError):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    # A dead peer is noticed within `heartbeat`; a process that fails waits at most
    # `shutdown` at exit for the others (which are then stopped) rather than JAX's 5 minutes.
    heartbeat = max(10, cfg.timeout_s // 2)
    shutdown = max(10, cfg.timeout_s // 4)
    if not explicit:
        logger.info("joining the cluster's processes (detected from the environment)")
        jax.distributed.initialize(
            initialization_timeout=cfg.timeout_s,
            heartbeat_timeout_seconds=heartbeat,
            shutdown_timeout_seconds=shutdown,
        )
        _watch_peers(cfg.timeout_s)
        return
    if cfg.process_id != 0:
        # JAX aborts the process (no exception) when the coordinator never answers, so look
        # for it first and fail with a line that names it.
        wait_for_coordinator(cfg.coordinator, cfg.timeout_s)
    logger.info(
        "process %d of %d joining the coordinator at %s",
        cfg.process_id,
        cfg.num_processes,
        cfg.coordinator,
    )
    jax.distributed.initialize(
        cfg.coordinator,
        cfg.num_processes,
        cfg.process_id,
        initialization_timeout=cfg.timeout_s,
        heartbeat_timeout_seconds=heartbeat,
        shutdown_timeout_seconds=shutdown,
    )
    _watch_peers(cfg.timeout_s)


_watchdog = None


def _watch_peers(timeout_s: int) -> None:
    """Name a lost peer (swejax.watchdog) within timeout_s / 4, before JAX's heartbeat
    (timeout_s / 2) aborts this process without a word."""
    global _watchdog
    import jax
    from jax._src import distributed

    from swejax.watchdog import PeerWatchdog

    if jax.process_count() == 1:
        return
    stale = max(5.0, timeout_s / 4)
    _watchdog = PeerWatchdog(
        distributed.global_state.client,
        jax.process_index(),
        jax.process_count(),
        beat_s=stale / 5,
        stale_s=stale,
    ).start()


def finish(ok: bool) -> None:
    """This process is done with the run (`ok`: normally); its peers stop watching for it.
    Done normally, it returns once every peer is done too: the processes exit together."""
    global _watchdog
    if _watchdog is not None:
        _watchdog.finish(ok, wait_for_peers=ok)
        _watchdog = None


def wait_for_coordinator(address: str, timeout_s: float) -> None:
    """Return once something listens at host:port; DistributedError after `timeout_s`."""
    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, int(port)), timeout=2):
                return
        except OSError as error:
            if time.monotonic() >= deadline:
                raise DistributedError(
                    f"no coordinator answered at {address} within {timeout_s:g} s "
                    f"(distributed.coordinator; is process 0 running? {error.strerror or error})"
                ) from None
            time.sleep(0.5)


def process_index() -> int:
    import jax

    return jax.process_index()


def process_count() -> int:
    import jax

    return jax.process_count()


def is_leader() -> bool:
    """Process 0 writes what the run keeps once (metrics, plots, the config)."""
    return process_index() == 0


def allgather(value) -> np.ndarray:
    """[processes, ...]: every process's `value` (a small numpy array of the same shape and
    dtype on all), on every process."""
    value = np.asarray(value)
    if process_count() == 1:
        return value[None]
    from jax.experimental import multihost_utils

    # JAX carries 32-bit values (without x64): 64-bit ones travel as pairs of 32-bit words,
    # bit for bit, and come back as they were sent.
    wide = value.dtype.itemsize == 8
    sent = np.ascontiguousarray(value).view(np.uint32) if wide else value
    if wide and sent.ndim == 0:
        sent = sent.reshape(2)
    gathered = np.asarray(multihost_utils.process_allgather(sent, tiled=False))
    if wide:
        gathered = np.ascontiguousarray(gathered.astype(np.uint32)).view(value.dtype)
        return gathered.reshape(process_count(), *value.shape)
    return gathered.astype(value.dtype)


def allgather_bytes(data: bytes) -> list[bytes]:
    """Every process's `data`, in process order."""
    lengths = allgather(np.int64(len(data)))
    padded = np.zeros(int(lengths.max()), np.uint8)
    padded[: len(data)] = np.frombuffer(data, np.uint8)
    rows = allgather(padded)
    return [bytes(row[:n]) for row, n in zip(rows, lengths, strict=True)]


def allgather_json(value) -> list:
    """Every process's JSON-serialisable `value`, in process order."""
    return [json.loads(b) for b in allgather_bytes(json.dumps(value).encode())]


def _flat(tree, prefix: str = "") -> dict:
    if not isinstance(tree, dict):
        return {prefix: tree}
    out = {}
    for key, value in tree.items():
        out.update(_flat(value, f"{prefix}.{key}" if prefix else key))
    return out


def first_difference(a: dict, b: dict) -> str | None:
    """The first dotted key (in sorted order) whose value differs between two config trees."""
    fa, fb = _flat(a), _flat(b)
    for key in sorted(set(fa) | set(fb)):
        if fa.get(key) != fb.get(key):
            return key
    return None


def comparable_config(config: Config) -> dict:
    """The resolved config as every process must hold it: all of it but `process_id`."""
    from swejax.config import to_dict

    tree = json.loads(json.dumps(to_dict(config)))
    tree["distributed"].pop("process_id", None)
    return tree


def check_same_config(config: Config) -> None:
    """Every process runs the same resolved config; else DistributedError naming the first
    key that differs (and the first process it differs on)."""
    if process_count() == 1:
        return
    trees = allgather_json(comparable_config(config))
    for index, tree in enumerate(trees[1:], start=1):
        key = first_difference(trees[0], tree)
        if key is not None:
            a, b = _flat(trees[0]).get(key), _flat(tree).get(key)
            raise DistributedError(
                f"the processes' configs differ: {key} is {a!r} on process 0 and {b!r} on "
                f"process {index}; every process must run the same command and config"
            )
