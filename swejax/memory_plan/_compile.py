"""XLA's own memory numbers for a run: its train step, its decode program, and one layer's
attention, compiled ahead of time for the target mesh from abstract parameters and optimizer
state (nothing allocated), on fake CPU devices or for a TPU slice (no TPU needed), with
`memory_analysis()` read back. The CPU compiler is not the GPU or TPU one: it upcasts some
bfloat16 work to float32 and schedules its own way.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from swejax.config import OptimizerConfig
from swejax.memory_plan._analytic import BATCH_DTYPES, GIB, PlanSpec, _local_dims
from swejax.models import abstract_model, param_shardings
from swejax.models.attention import attend
from swejax.models.build import is_variable
from swejax.models.config import ModelConfig
from swejax.sharding import activation_mesh, named_sharding
from swejax.train import (
    BATCH_FIELDS,
    TrainStep,
    jit_train_step,
    make_optimizer,
    state_shardings,
)


@dataclasses.dataclass(frozen=True)
class XlaMemory:
    """`Compiled.memory_analysis()` per device, in bytes."""

    argument: int
    output: int
    alias: int
    temp: int
    generated_code: int

    @property
    def peak(self) -> int:
        """Live at once: inputs, outputs not written over donated inputs, scratch, code."""
        return self.argument + self.output - self.alias + self.temp + self.generated_code


class CompileOutOfMemory(RuntimeError):
    """The compiler itself refused: the step needs more than the device has (the TPU compiler
    checks its temporaries against HBM; the CPU one never does)."""

    def __init__(self, message: str):
        super().__init__(message)
        # "the total memory required for HLO temporaries (223.25G) exceeds available HBM (95.74G)"
        found = re.search(r"HLO temporaries \(([\d.]+)G\)", message)
        self.required_temp = int(float(found.group(1)) * GIB) if found else None


@dataclasses.dataclass(frozen=True)
class CompileResult:
    memory: XlaMemory
    attention: str  # the implementation compiled
    lower_s: float
    compile_s: float
    # A float32 copy of the saved layer inputs [L, B, T, D] in the compiled program: XLA's CPU
    # backend makes one around the scan's bfloat16 dynamic-update-slice; GPU and TPU do not.
    float32_residual_copy: int = 0


def abstract_train_state(cfg: ModelConfig, mesh: Mesh):
    """(graphdef, params, tx, opt_state) with ShapeDtypeStructs at the Trainer's shardings."""
    model = abstract_model(cfg)
    graphdef, state = nnx.split(model)
    shardings = param_shardings(model, mesh)
    params = jax.tree.map(
        lambda v, s: v.replace(jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=s)),
        state,
        shardings,
        is_leaf=is_variable,
    )
    # AdamW's state has the same shapes whatever its rates: any will do for planning.
    tx = make_optimizer(OptimizerConfig(), learning_rate=1e-6, weight_decay=0.1)
    _, opt_shardings = state_shardings(tx, params)
    opt_state = jax.tree.map(
        lambda s, sharding: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
        jax.eval_shape(tx.init, params),
        opt_shardings,
    )
    return graphdef, params, tx, opt_state


def abstract_batch(spec: PlanSpec, mesh: Mesh) -> dict[str, jax.ShapeDtypeStruct]:
    """The step's batch fields, rows split over the mesh's batch axes as the Trainer places them."""
    shape = (spec.batch_rows, spec.seq)
    sharding = named_sharding(mesh, ("batch", "seq"), shape)
    return {
        k: jax.ShapeDtypeStruct(shape, BATCH_DTYPES[k], sharding=sharding) for k in BATCH_FIELDS
    }


def compile_train_step(spec: PlanSpec, mesh: Mesh) -> CompileResult:
    """Compile the Trainer's step (`spec.objective`) ahead of time on `mesh` and read XLA's
    memory analysis."""
    cfg = spec.model
    graphdef, params, tx, opt_state = abstract_train_state(cfg, mesh)
    param_sh = jax.tree.map(lambda p: p.sharding, params)
    opt_sh = jax.tree.map(lambda s: s.sharding, opt_state)
    step = jit_train_step(param_sh, opt_sh)
    started = time.perf_counter()
    with activation_mesh(mesh):
        lowered = step.lower(
            TrainStep(graphdef, tx, spec.objective, spec.micro_batches),
            params,
            opt_state,
            abstract_batch(spec, mesh),
        )
    lowered_at = time.perf_counter()
    try:
        compiled = lowered.compile()
    except jax.errors.JaxRuntimeError as error:
        if "RESOURCE_EXHAUSTED" not in str(error):
            raise
        raise CompileOutOfMemory(str(error)) from error
    done = time.perf_counter()
    copy = 0
    if jnp.dtype(cfg.dtype) != jnp.float32:
        dims = _local_dims(("layers", "batch", "seq", None), _residual_stack(spec), mesh)
        if f"f32[{','.join(map(str, dims))}]" in compiled.as_text():
            copy = math.prod(dims) * 4
    return CompileResult(
        _memory(compiled), cfg.attention, lowered_at - started, done - lowered_at, copy
    )


def compile_decode(cfg: ModelConfig, engine, mesh: Mesh, params) -> tuple[XlaMemory, str]:
    """(XLA's memory, the compiled HLO text) of the engine's decode program on `mesh` with
    `engine`'s slots and pool, every page of a slot visible, over abstract `params` (a model
    state or a decode copy's `SplitWeights`, at their shardings on `mesh`)."""
    from swejax.sampling import (
        DecodeProgram,
        SamplingParams,
        abstract_state,
        abstract_table,
        jit_decode,
        row_sharding,
    )

    state = abstract_state(cfg, engine, mesh)
    table = abstract_table(engine, mesh, engine.pages_per_slot)
    program = DecodeProgram(
        nnx.graphdef(abstract_model(cfg)),
        visible_pages=engine.pages_per_slot,
        num_steps=engine.steps_per_call,
        sampling=SamplingParams(),
        stop_tokens=engine.stop_tokens,
        split_layer_weights=engine.split_layer_weights,
    )
    # The engine's decode at the shardings its state is laid out at.
    decode = jit_decode(jax.tree.map(lambda s: s.sharding, state), row_sharding(mesh, engine))
    with activation_mesh(mesh):
        lowered = decode.lower(program, params, state, table, engine.capacity)
    try:
        compiled = lowered.compile()
    except jax.errors.JaxRuntimeError as error:
        if "RESOURCE_EXHAUSTED" not in str(error):
            raise
        raise CompileOutOfMemory(str(error)) from error
    return _memory(compiled), compiled.as_text()


def abstract_decode_copy(cfg: ModelConfig, mesh: Mesh):
    """The rollout layout's copy of the weights (`swejax.sampling.decode_weights`) as
    ShapeDtypeStructs on `mesh`: the compute dtype, each layer's arrays apart."""
    from swejax.sampling import SplitWeights

    dtype = jnp.dtype(cfg.dtype)
    state = nnx.state(abstract_model(cfg))
    shardings = param_shardings(abstract_model(cfg), mesh)

    def leaf(v, s, layer: bool):
        shape = v.shape[1:] if layer else v.shape
        sharding = NamedSharding(mesh, P(*s.spec[1:])) if layer else s
        return v.replace(jax.ShapeDtypeStruct(shape, dtype, sharding=sharding))

    rest = {k: v for k, v in state.items() if k != "layers"}
    rest = jax.tree.map(
        lambda v, s: leaf(v, s, False),
        nnx.State(rest),
        nnx.State({k: shardings[k] for k in rest}),
        is_leaf=is_variable,
    )
    stacked = jax.tree.map(
        lambda v, s: leaf(v, s, True), state["layers"], shardings["layers"], is_leaf=is_variable
    )
    return SplitWeights(rest, (stacked,) * cfg.num_layers)


def compile_attention(spec: PlanSpec, mesh: Mesh) -> XlaMemory:
    """XLA's memory for one layer's attention alone, forward and backward, at the step's shapes
    and shardings: what the compiled step's peak holds for attention while a layer is redone."""
    cfg = spec.model
    dtype = jnp.dtype(cfg.dtype)

    def array(names, shape, dt=dtype):
        return jax.ShapeDtypeStruct(shape, dt, sharding=named_sharding(mesh, names, shape))

    rows, seq, N, K, H = spec.rows, spec.seq, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    q = array(("batch", "seq", "act_heads", None), (rows, seq, N, H))
    kv = array(("batch", "seq", "act_kv_heads", None), (rows, seq, K, H))
    segments = array(("batch", "seq"), (rows, seq), jnp.int32)

    def forward_backward(q, k, v, segment_ids, dout):
        out, pullback = jax.vjp(
            lambda q, k, v: attend(q, k, v, segment_ids, impl=cfg.attention), q, k, v
        )
        return pullback(dout)

    with activation_mesh(mesh):
        compiled = jax.jit(forward_backward).lower(q, kv, kv, segments, q).compile()
    return _memory(compiled)


def _memory(compiled) -> XlaMemory:
    stats = compiled.memory_analysis()
    return XlaMemory(
        argument=stats.argument_size_in_bytes,
        output=stats.output_size_in_bytes,
        alias=stats.alias_size_in_bytes,
        temp=stats.temp_size_in_bytes,
        generated_code=stats.generated_code_size_in_bytes,
    )


def _residual_stack(spec: PlanSpec) -> tuple[int, ...]:
    cfg = spec.model
    return (cfg.num_layers, spec.rows, spec.seq, cfg.hidden_size)
