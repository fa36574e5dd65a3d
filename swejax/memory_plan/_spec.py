"""The plan of the run a config trains: its model, its mesh over a number of devices, its rows,
micro-batches, objective and engine (`PlanSpec`), read from the same config sections the run
builds from (`swejax.builder`), without building anything."""

from __future__ import annotations

from swejax.config import Config
from swejax.errors import UserError
from swejax.memory_plan._analytic import PlanSpec
from swejax.models import model_config_from
from swejax.rl import row_count_for
from swejax.sharding import MeshError, resolve_mesh_shape
from swejax.train import Objective


def batch_rows(config: Config, phase: str, batch_shards: int) -> int:
    """Packed rows of one optimizer step at most: one trajectory per row, rounded up to a
    power of two times micro-batches x batch shards, as the run packs them."""
    trajectories = config.rft.batch_size if phase == "rft" else config.dapo.batch_size
    return row_count_for(trajectories, config.train.micro_batches * batch_shards)


def plan_spec(config: Config, devices: int, phase: str | None = None) -> PlanSpec:
    """The `PlanSpec` of the run `config` trains, its mesh over `devices`. `phase` defaults to
    DAPO, or RFT for a run without DAPO iterations."""
    phase = phase or ("dapo" if config.dapo.iterations else "rft")
    try:
        mesh = resolve_mesh_shape(config.mesh.shape(), devices)
    except MeshError as error:
        raise UserError(f"config.mesh: {error}") from error
    try:  # the model is planned for hardware this machine may lack: no backend check
        model = model_config_from(config.model, False)
    except (ValueError, FileNotFoundError) as error:
        raise UserError(f"cannot resolve config.model: {error}") from error
    shards = mesh["data"] * mesh["fsdp"]
    rows = batch_rows(config, phase, shards)
    micro = config.train.micro_batches
    return PlanSpec(
        model=model,
        mesh=mesh,
        seq=config.row_length,
        micro_batch_rows=rows // (micro * shards),
        micro_batches=micro,
        engine=config.engine,
        objective=Objective.of_phase(phase, config.dapo.eps_low, config.dapo.eps_high),
    )
