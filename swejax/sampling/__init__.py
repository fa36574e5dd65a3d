"""The generation engine: in-program sampling over the trainer's own weights.

`Engine` holds a fixed number of slots over one KV cache (prefill, extend, decode, free);
`generate` is the convenience API over it; `SamplingParams` and `sample` are the strategies;
`stream_id` names a sequence's random stream (what it is, not where it runs).
`checkpoint_decoding` reads a checkpoint's generation_config.json as `SamplingParams`.
`abstract_state`, `DecodeProgram` and `jit_decode` are the engine's decode program as the
memory planner compiles it ahead of time (`swejax.memory_plan.compile_decode_step`).
"""

from swejax.config import EngineConfig
from swejax.sampling._engine import ContextFull, DecodeResult, Engine
from swejax.sampling._generate import Generation, generate
from swejax.sampling._generation_config import (
    GENERATION_CONFIG,
    CheckpointDecoding,
    FieldUse,
    checkpoint_decoding,
    read_generation_config,
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
    "Engine",
    "EngineConfig",
    "EngineState",
    "FieldUse",
    "SlotTable",
    "Generation",
    "SamplingParams",
    "StopReason",
    "abstract_state",
    "abstract_table",
    "cache_bytes_per_token",
    "checkpoint_decoding",
    "generate",
    "jit_decode",
    "penalize_repetition",
    "read_generation_config",
    "require_unbiased",
    "row_sharding",
    "sample",
    "sampling_logits",
    "stream_id",
]
