"""swejax attention kernels, each next to a reference implementation with the same signature.

Import package `swejax_kernels` (the folder is `kernels/`). Model code never calls these
directly: `swejax.models.attention` dispatches on `config.model.attention`.
"""

from swejax_kernels.blockwise import block_backward as block_backward
from swejax_kernels.blockwise import block_forward as block_forward
from swejax_kernels.decode import paged_decode_attention as paged_decode_attention
from swejax_kernels.flash import flash_attention as flash_attention
from swejax_kernels.reference import attention as reference_attention
from swejax_kernels.reference import cached_attention as reference_cached_attention
from swejax_kernels.ring import ring_attention as ring_attention

__all__ = ["reference_attention", "reference_cached_attention"]
