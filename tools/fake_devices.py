"""Fake CPU devices for the tools that plan or measure layouts on this machine."""

from __future__ import annotations

import os
import sys

_DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"


def use_fake_devices(devices: int, tool: str) -> None:
    """Point JAX at `devices` CPU devices; must run before jax is first imported.

    JAX_PLATFORMS=cpu also keeps a GPU or TPU on this machine out of it, and lets a TPU
    topology be compiled for without initialising a TPU.
    """
    if "jax" in sys.modules:
        raise RuntimeError(
            f"{tool} needs its own process: jax is already imported, so the fake device count "
            f"cannot change (run tools/{tool}.py as a script)"
        )
    flags = os.environ.get("XLA_FLAGS", "").split()
    flags = [f for f in flags if not f.startswith(_DEVICE_COUNT_FLAG)]
    os.environ["XLA_FLAGS"] = " ".join([*flags, f"{_DEVICE_COUNT_FLAG}={devices}"])
    os.environ["JAX_PLATFORMS"] = "cpu"
