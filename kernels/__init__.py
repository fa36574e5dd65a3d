"""swejax attention kernels, each next to a reference implementation with the same signature.

Import package `swejax_kernels` (the folder is `kernels/`). Model code never calls these
directly: `swejax.models.attention` dispatches on `config.model.attention`.
"""

from swejax_kernels.reference import attention as reference_attention
from swejax_kernels.reference import cached_attention as reference_cached_attention

__all__ = ["reference_attention", "reference_cached_attention"]
