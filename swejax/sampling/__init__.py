"""The generation engine: in-program sampling over the trainer's own weights.

`Engine` holds a fixed number of slots over one KV cache (prefill, extend, decode, free);
`generate` is the convenience API over it; `rollout_layout` and `decode_weights` give the
devices decoding runs on and the copy of the weights it reads there; `SamplingParams` and
`sample` are the strategies;
`stream_id` names a sequence's random stream (what it is, not where it runs).
`checkpoint_decoding` reads a checkpoint's generation_config.json as `SamplingParams`.
`abstract_state`, `DecodeProgram` and `jit_decode` are the engine's decode program as the
memory planner compiles it ahead of time (`swejax.memory_plan.compile_decode`).
"""

from swejax.config import EngineConfig
from swejax.sampling._admission import Preemption
from swejax.sampling._engine import ContextFull, DecodeResult, Engine, Fed
from swejax.sampling._generate import Generation, generate
from swejax.sampling._generation_config import (
    GENERATION_CONFIG,
    CheckpointDecoding,
    FieldUse,
    checkpoint_decoding,
    read_generation_config,
)
from swejax.sampling._layout import (
    DecodeWeights,
    LayoutError,
    RolloutLayout,
    SplitWeights,
    decode_weights,
    default_tensor,
    rollout_layout,
)
from swejax.sampling._programs import DecodeProgram, StopReason, jit_decode
from swejax.sampling._state import (
    EngineState,
    SlotTable,
    abstract_state,
    abstract_table,
    cache_bytes_per_token,
    row_sharding,
)
from swejax.sampling._strategies import (
    SamplingParams,
    penalize_repetition,
    require_unbiased,
    sample,
    sampling_logits,
)
from swejax.sampling._streams import stream_id

__all__ = [
    "GENERATION_CONFIG",
    "CheckpointDecoding",
    "ContextFull",
    "DecodeProgram",
    "DecodeResult",
    "DecodeWeights",
    "Engine",
    "EngineConfig",
    "EngineState",
    "Fed",
    "LayoutError",
    "Preemption",
    "RolloutLayout",
    "FieldUse",
    "SlotTable",
    "SplitWeights",
    "Generation",
    "SamplingParams",
    "StopReason",
    "abstract_state",
    "abstract_table",
    "cache_bytes_per_token",
    "checkpoint_decoding",
    "decode_weights",
    "default_tensor",
    "generate",
    "jit_decode",
    "penalize_repetition",
    "read_generation_config",
    "require_unbiased",
    "rollout_layout",
    "row_sharding",
    "sample",
    "sampling_logits",
    "stream_id",
]
