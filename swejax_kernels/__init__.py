"""swejax's attention kernels, each next to a plain-XLA reference with the same signature.

- `reference_attention`, `reference_cached_attention` (`reference`): plain XLA self-attention
  over a sequence and attention of new tokens over a gathered KV cache; what the kernels are
  checked against.
- `flash_attention` (`flash`): the Pallas flash kernel for GPU (Triton) and TPU (Mosaic),
  differentiable; its block pieces `flash.flash_forward` / `flash.flash_backward` feed the ring.
- `block_forward`, `block_backward` (`blockwise`): one block of keys in plain jnp, returning
  what a later merge needs (output and log-sum-exp): the ring's jnp blocks.
- `ring_attention` (`ring`): self-attention with the sequence split over a mesh axis, K/V
  passed round it.
- `paged_decode_attention` (`decode`): one new token per slot over its KV pages, read in place
  from the pool by a Pallas kernel.

`platform` says which platform the Pallas kernels are built for (`lowering_for` swaps in a
stand-in, to lower them for a GPU or TPU this machine lacks). Model code never calls these
directly: `swejax.models.attention` dispatches on `ModelConfig.attention`.
"""

from swejax_kernels.blockwise import block_backward, block_forward
from swejax_kernels.decode import paged_decode_attention
from swejax_kernels.flash import flash_attention
from swejax_kernels.reference import attention as reference_attention
from swejax_kernels.reference import cached_attention as reference_cached_attention
from swejax_kernels.ring import ring_attention

__all__ = [
    "block_backward",
    "block_forward",
    "flash_attention",
    "paged_decode_attention",
    "reference_attention",
    "reference_cached_attention",
    "ring_attention",
]
