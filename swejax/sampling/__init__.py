"""The generation engine: in-program sampling over the trainer's own weights.

`Engine` holds a fixed number of slots over one KV cache (prefill, extend, decode, free);
`generate` is the convenience API over it; `SamplingParams` and `sample` are the strategies.
"""

from swejax.sampling._config import EngineConfig
from swejax.sampling._engine import ContextFull, DecodeResult, Engine
from swejax.sampling._generate import Generation, generate
from swejax.sampling._programs import StopReason
from swejax.sampling._strategies import SamplingParams, require_unbiased, sample

__all__ = [
    "ContextFull",
    "DecodeResult",
    "Engine",
    "EngineConfig",
    "Generation",
    "SamplingParams",
    "StopReason",
    "generate",
    "require_unbiased",
    "sample",
]
