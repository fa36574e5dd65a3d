"""Which platform the Pallas kernels are built for: the default backend, or a stand-in.

The kernels pick their layout (Triton for GPU, Mosaic for TPU) and refuse a platform they
cannot compile for from `target_platform()`. `lowering_for("gpu" | "tpu")` swaps in a target for
the duration of a `with` block, so a machine without that accelerator can still trace and lower
the kernels for it through `jax.export(..., platforms=("cuda",) | ("tpu",))`. That runs all of
Pallas' own lowering (block shapes, index maps, every op in the kernel body down to Triton or
Mosaic IR), which is how the CPU tests check the hardware paths. Nothing lowered this way can
run here, and the target is only read while tracing: jit and export inside the block.

JAX caches traces by function and arguments, and the target is neither, so entering and leaving
the block clears JAX's caches: no trace made for the stand-in is reused outside it, or the
other way round. That costs recompiles, which is why it is for tests and tools, not training.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import jax

PLATFORMS = ("gpu", "tpu")
_TARGET: contextvars.ContextVar[str | None] = contextvars.ContextVar("target", default=None)


def target_platform() -> str:
    """ "gpu", "tpu", "cpu", ...: what the kernels compile for."""
    target = _TARGET.get()
    return jax.default_backend() if target is None else target


@contextlib.contextmanager
def lowering_for(platform: str) -> Iterator[None]:
    """Within the block, kernels are traced for `platform` whatever this machine has."""
    if platform not in PLATFORMS:
        raise ValueError(f"lowering_for takes one of {PLATFORMS}, not {platform!r}")
    jax.clear_caches()
    token = _TARGET.set(platform)
    try:
        yield
    finally:
        _TARGET.reset(token)
        jax.clear_caches()
