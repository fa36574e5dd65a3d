"""The TPU compiler without a TPU: deviceless ahead-of-time compilation through libtpu.

Given a slice's topology (`jax.experimental.topologies`), JAX compiles for chips it does not
have, with the compiler that ships in libtpu: the same XLA passes, memory assignment and Mosaic
kernel compiler as on the slice, so a program that compiles here fits the chip's HBM and VMEM
there. `tools/plan_memory.py --topology` and `tests/test_tpu_compile.py` use it.

`tools/setup.sh` installs the libtpu that matches the installed jaxlib into `.tpu_compiler/`,
beside the virtual environment rather than inside it: a libtpu on the import path makes every
JAX process on a machine without a TPU try to start one and log the failure.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path

import jax

LIBTPU_DIR = Path(__file__).resolve().parents[1] / ".tpu_compiler"
_LIBRARY = LIBTPU_DIR / "libtpu" / "libtpu.so"


def libtpu_path() -> str | None:
    """Where the TPU compiler is: $TPU_LIBRARY_PATH, an importable libtpu, or `.tpu_compiler/`."""
    if os.environ.get("TPU_LIBRARY_PATH"):
        return os.environ["TPU_LIBRARY_PATH"]
    if importlib.util.find_spec("libtpu") is not None:
        import libtpu

        return libtpu.get_library_path()
    return str(_LIBRARY) if _LIBRARY.is_file() else None


@functools.cache
def tpu_devices(topology: str) -> tuple[jax.Device, ...]:
    """The chips of a TPU slice ("v5p:4x4x8", "v6e:4x4", ...), to compile for, never to run on.

    Cached: each description of a topology makes new device objects, and arrays placed on one
    set cannot meet arrays placed on another in a program.
    """
    from jax.experimental import topologies

    path = libtpu_path()
    if path is None:
        raise RuntimeError(
            "no TPU compiler: run `bash tools/setup.sh` (it puts libtpu in .tpu_compiler/) or "
            "install the libtpu that jax[tpu] pins for this jaxlib"
        )
    os.environ["TPU_LIBRARY_PATH"] = path  # read when JAX loads the TPU plugin, below
    # Without it the plugin logs an error that it found no TPU workers; it needs none to compile.
    os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
    # libtpu takes a machine-wide lock (/tmp/libtpu_lockfile) so that two processes never
    # drive one TPU; compiling drives none, and planners and tests compile side by side.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    description = topologies.get_topology_desc(topology_name=topology, platform="tpu")
    return tuple(description.devices)
