"""Remat policies `ModelConfig.remat` can name: what the layer scan keeps for the backward pass.

`REMAT_POLICIES` maps each name to a `jax.checkpoint` policy, or to None for no checkpointing
(the scan keeps every intermediate). `ModelConfig` validates the name against its keys and the
model wraps its layer step in `jax.checkpoint` with the policy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

REMAT_POLICIES: dict[str, Callable[..., Any] | None] = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    # Keep each layer's attention and MLP outputs (the model names them with `checkpoint_name`);
    # recompute everything inside them.
    "save_attn_mlp_out": jax.checkpoint_policies.save_only_these_names("attn_out", "mlp_out"),
}
