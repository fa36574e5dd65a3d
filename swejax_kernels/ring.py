"""Ring attention: self-attention with the sequence split over a mesh axis (`context`).

Each of the n devices on the ring holds 1/n of the queries, keys and values. Keys and values
(with their segment ids) travel round the ring by `ppermute`; at every step a device attends its
queries to the block it holds (the block contract of `swejax_kernels.blockwise`, in plain jnp or
the Pallas flash kernels) and folds the block's (out, lse) into a running online softmax. The
backward pass (a custom VJP) sends keys and values round again together with the dK/dV sums,
recomputing each block's probabilities from the final out and lse: memory stays O(local length),
nothing of size T x S is kept.

Causal load balance (zigzag). Cut the sequence into 2n chunks; device r holds chunks r and
2n-1-r (call them its first and second). Then with causal masking every ring step costs the same:
  step 0, the device's own keys: one causal block (its two chunks are in increasing order);
  step s > 0, keys from src = (r - s) mod n:
    src < r: the source's first chunk precedes both local chunks and its second chunk
      (2n-1-src > 2n-1-r) follows both, so all local queries see exactly its first chunk;
    src > r: both source chunks follow the local first chunk and precede the local second one
      (src < n <= 2n-1-r and 2n-1-src < 2n-1-r), so only the second query chunk sees them, all.
Each step is one c x 2c (or 2c x c) non-causal block, c = length / 2n, the same work on every
device; with the natural layout device n-1 would do n times the work of device 0.

The zigzag reorder is two `ppermute`s of half a local shard each (the even-indexed and the
odd-indexed chunk), so it is point-to-point by construction; a gather on the global array would
leave the choice to the SPMD partitioner, which may all-gather. Done inside every call it costs
q, k, v and segment ids once to the zigzag layout and the output once back (the backward pass:
dout in, dq, dk, dv back): more than the ring's own traffic ((n-1) shifts of K and V) for small n
with grouped queries, where Q is Nq/Nkv times K. So a model permutes its tokens once instead
(`to_zigzag` on token ids, positions and segment ids; `from_zigzag` on the final hidden states),
every position-wise layer is indifferent to the order, and each attention call passes
`zigzagged=True`. Non-causal attention needs no balance and skips the reorder.

One module, though over 400 lines: the forward ring, its custom-VJP backward ring and the zigzag
layout they both assume are one algorithm, and splitting them would separate the shift schedule
from the chunk arithmetic it depends on.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import AbstractMesh, Mesh
from jax.sharding import PartitionSpec as P
from jaxtyping import Array, Float, Int

from swejax_kernels.blockwise import block_backward, block_forward


class Blocks(NamedTuple):
    """The block contract (see `swejax_kernels.blockwise`): a forward and a backward function."""

    forward: Callable
    backward: Callable


def ring_attention(
    q: Float[Array, "B T Nq H"],
    k: Float[Array, "B T Nkv H"],
    v: Float[Array, "B T Nkv H"],
    *,
    mesh: Mesh | AbstractMesh | None,
    axis_name: str = "context",
    causal: bool = True,
    segment_ids: Int[Array, "B T"] | None = None,
    block_impl: str | Blocks = "reference",
    interpret: bool = False,
    batch_axes: Sequence[str] = ("data", "fsdp"),
    head_axis: str = "tensor",
    zigzagged: bool = False,
) -> Float[Array, "B T Nq H"]:
    """Self-attention on global arrays whose sequence is split over `mesh` axis `axis_name`.

    Same result as `swejax_kernels.reference.attention(q, k, v, causal=..., segment_ids=...)`.
    With `zigzagged`, q, k, v and segment ids are already in the zigzag order (`to_zigzag`) and
    the output comes back in it: what a model does that permutes its tokens once.
    The batch is split over those `batch_axes` that divide it, heads over `head_axis` when it
    divides the key/value heads (else every device on it computes all heads). Without a mesh, or
    with `axis_name` absent or of size 1, the ring has one device: plain blockwise attention.
    `block_impl` is "reference" (jnp blocks, any backend), "flash" (Pallas kernels; `interpret`
    runs them in interpret mode) or a `Blocks` pair.
    """
    batch, length, num_heads, head_dim = q.shape
    num_kv_heads = k.shape[2]
    if k.shape != v.shape or k.shape[:2] != (batch, length) or k.shape[3] != head_dim:
        raise ValueError(f"ring attention is self-attention: q {q.shape}, k {k.shape}, v {v.shape}")
    if num_heads % num_kv_heads:
        raise ValueError(f"{num_heads} query heads are not a multiple of {num_kv_heads} kv heads")
    if segment_ids is not None and segment_ids.shape != (batch, length):
        raise ValueError(f"segment_ids {segment_ids.shape} do not match q {q.shape}")
    sizes = {} if mesh is None else dict(mesh.shape)
    ring = _Ring(
        _blocks(block_impl, interpret), causal, axis_name, sizes.get(axis_name, 1), zigzagged
    )
    chunks = 2 * ring.size if causal and ring.size > 1 else ring.size
    if length % chunks:
        layout = "zigzag (2 x ring size)" if chunks > ring.size else "ring size"
        raise ValueError(
            f"ring attention needs the sequence length ({length}) to be a multiple of "
            f"{chunks} chunks: the {layout}, with {axis_name}={ring.size}"
        )
    local = functools.partial(_local_attention, ring)
    if mesh is None:
        return local(q, k, v, segment_ids)
    batch_spec = _dividing_axes(batch, batch_axes, sizes)
    seq_spec = axis_name if ring.size > 1 else None
    head_spec = _dividing_axes(num_kv_heads, (head_axis,), sizes)
    qkv_spec = P(batch_spec, seq_spec, head_spec, None)
    segment_spec = None if segment_ids is None else P(batch_spec, seq_spec)
    return jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(qkv_spec, qkv_spec, qkv_spec, segment_spec),
        out_specs=qkv_spec,
        # The jnp blocks keep the varying-axes check; a pallas_call's outputs carry no record
        # of the axes they vary over, so the Pallas blocks cannot take part in it.
        check_vma=block_impl == "reference",
    )(q, k, v, segment_ids)


def to_zigzag(
    x: Array,
    *,
    mesh: Mesh | AbstractMesh | None,
    axis_name: str = "context",
    batch_axes: Sequence[str] = ("data", "fsdp"),
) -> Array:
    """[B, T, ...] split over `axis_name` -> the same tokens in the causal ring's zigzag order.

    Device r then holds chunks r and 2n-1-r of 2n. The identity without a ring (no mesh, or the
    axis absent or of size 1). T must be a multiple of 2n.
    """
    return _reorder(x, _to_zigzag, mesh, axis_name, batch_axes)


def from_zigzag(
    x: Array,
    *,
    mesh: Mesh | AbstractMesh | None,
    axis_name: str = "context",
    batch_axes: Sequence[str] = ("data", "fsdp"),
) -> Array:
    """The inverse of `to_zigzag`: tokens back in sequence order."""
    return _reorder(x, _from_zigzag, mesh, axis_name, batch_axes)


def _reorder(x, reorder, mesh, axis_name: str, batch_axes: Sequence[str]):
    sizes = {} if mesh is None else dict(mesh.shape)
    size = sizes.get(axis_name, 1)
    if size == 1:
        return x
    if x.ndim < 2 or x.shape[1] % (2 * size):
        raise ValueError(
            f"the zigzag order needs [B, T, ...] with T a multiple of {2 * size}; got {x.shape}"
        )
    ring = _Ring(Blocks(block_forward, block_backward), True, axis_name, size)
    spec = P(_dividing_axes(x.shape[0], batch_axes, sizes), axis_name)
    return jax.shard_map(
        functools.partial(reorder, ring=ring), mesh=mesh, in_specs=spec, out_specs=spec
    )(x)


# --- configuration ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Ring:
    blocks: Blocks
    causal: bool
    axis_name: str
    size: int  # devices on the ring
    zigzagged: bool = False  # the inputs come in zigzag order, and the output leaves in it

    @property
    def zigzag(self) -> bool:
        return self.causal and self.size > 1

    @property
    def reorders(self) -> bool:
        """Whether this call moves its inputs into the zigzag order and its output back."""
        return self.zigzag and not self.zigzagged


def _blocks(block_impl: str | Blocks, interpret: bool) -> Blocks:
    if isinstance(block_impl, Blocks):
        return block_impl
    if block_impl == "reference":
        return Blocks(block_forward, block_backward)
    if block_impl == "flash":
        # Imported here: the Pallas module is only needed (and only lowers) on GPU and TPU.
        from swejax_kernels import flash

        return Blocks(
            functools.partial(flash.flash_forward, interpret=interpret),
            functools.partial(flash.flash_backward, interpret=interpret),
        )
    raise ValueError(f"block_impl={block_impl!r}; choose 'reference', 'flash' or a Blocks pair")


def _dividing_axes(size: int, axes: Sequence[str], mesh_sizes: dict[str, int]):
    """The mesh axes (in order, size > 1) whose running product divides `size`, for a spec."""
    chosen: list[str] = []
    for axis in axes:
        axis_size = mesh_sizes.get(axis, 1)
        if axis_size > 1 and size % (axis_size * math.prod(mesh_sizes[a] for a in chosen)) == 0:
            chosen.append(axis)
    return None if not chosen else chosen[0] if len(chosen) == 1 else tuple(chosen)


# --- per device -------------------------------------------------------------------------------


def _local_attention(ring: _Ring, q, k, v, segment_ids):
    """One device's shard in, its shard of the output out, both in the caller's order."""
    if ring.reorders:
        q, k, v = (_to_zigzag(x, ring) for x in (q, k, v))
        segment_ids = None if segment_ids is None else _to_zigzag(segment_ids, ring)
    out = _ring_attention(ring, q, k, v, segment_ids)
    return _from_zigzag(out, ring) if ring.reorders else out


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _ring_attention(ring: _Ring, q, k, v, segment_ids):
    return _ring_forward(ring, q, k, v, segment_ids)[0]


def _ring_attention_fwd(ring: _Ring, q, k, v, segment_ids):
    out, lse = _ring_forward(ring, q, k, v, segment_ids)
    return out, (q, k, v, segment_ids, out, lse)


def _ring_attention_bwd(ring: _Ring, residuals, dout):
    q, k, v, segment_ids, out, lse = residuals
    dq, dk, dv = _ring_backward(ring, q, k, v, segment_ids, out, lse, dout)
    return dq, dk, dv, None  # segment ids are integers: no cotangent


_ring_attention.defvjp(_ring_attention_fwd, _ring_attention_bwd)


def _ring_forward(ring: _Ring, q, k, v, segment_ids):
    """Output (q.dtype) and float32 lse [b, Nq, t] of local queries over every device's keys."""
    rank = _rank(ring)
    travelling = (k, v, segment_ids)
    out, lse = None, None
    for step in range(ring.size):
        # Send the block on before using it, so the transfer can overlap this step's compute.
        arriving = _shift(travelling, ring) if step < ring.size - 1 else None
        block_out, block_lse = _step_forward(ring, step, rank, q, segment_ids, *travelling)
        if out is None:
            out, lse = block_out.astype(jnp.float32), block_lse
        else:
            out, lse = _merge(out, lse, block_out, block_lse)
        travelling = arriving
    return out.astype(q.dtype), lse


def _ring_backward(ring: _Ring, q, k, v, segment_ids, out, lse, dout):
    """dq, dk, dv: keys and values go round again, each with the running sum of its gradient."""
    rank = _rank(ring)
    travelling = (k, v, segment_ids)
    dq = jnp.zeros(q.shape, jnp.float32)
    dkv = (jnp.zeros(k.shape, jnp.float32), jnp.zeros(v.shape, jnp.float32))
    for step in range(ring.size):
        arriving = _shift(travelling, ring) if step < ring.size - 1 else None
        step_dq, step_dk, step_dv = _step_backward(
            ring, step, rank, q, segment_ids, out, lse, dout, *travelling
        )
        dq = dq + step_dq.astype(jnp.float32)
        dkv = (dkv[0] + step_dk.astype(jnp.float32), dkv[1] + step_dv.astype(jnp.float32))
        # The sums travel with their block; the last shift brings each home to its owner.
        dkv = _shift(dkv, ring)
        travelling = arriving
    return dq.astype(q.dtype), dkv[0].astype(k.dtype), dkv[1].astype(v.dtype)


def _step_forward(ring: _Ring, step: int, rank, q, q_segments, k, v, kv_segments):
    """(out, lse) of the local queries over the block held at `step`; -inf rows saw nothing."""
    forward = ring.blocks.forward
    if not ring.causal:
        return forward(q, k, v, causal=False, q_segment_ids=q_segments, kv_segment_ids=kv_segments)
    if step == 0:
        return forward(q, k, v, causal=True, q_segment_ids=q_segments, kv_segment_ids=kv_segments)
    half = q.shape[1] // 2

    def source_before(q, q_segments, k, v, kv_segments):
        # Every local query sees exactly the source's first chunk.
        return forward(
            q,
            k[:, :half],
            v[:, :half],
            causal=False,
            q_segment_ids=q_segments,
            kv_segment_ids=_first_half(kv_segments),
        )

    def source_after(q, q_segments, k, v, kv_segments):
        # Only the second query chunk sees the source, all of it.
        out, lse = forward(
            q[:, half:],
            k,
            v,
            causal=False,
            q_segment_ids=_second_half(q_segments),
            kv_segment_ids=kv_segments,
        )
        return (
            jnp.concatenate([jnp.zeros_like(out), out], axis=1),
            jnp.concatenate([jnp.full_like(lse, -jnp.inf), lse], axis=2),
        )

    # src = (rank - step) mod n precedes rank exactly when step <= rank.
    return jax.lax.cond(step <= rank, source_before, source_after, q, q_segments, k, v, kv_segments)


def _step_backward(ring: _Ring, step: int, rank, q, q_segments, out, lse, dout, k, v, kv_segments):
    """This step's share of dq (local queries) and of dk, dv (the block held at `step`)."""
    backward = ring.blocks.backward
    if not ring.causal or step == 0:
        return backward(
            q,
            k,
            v,
            out,
            lse,
            dout,
            causal=ring.causal,
            q_segment_ids=q_segments,
            kv_segment_ids=kv_segments,
        )
    half = q.shape[1] // 2

    def source_before(q, q_segments, out, lse, dout, k, v, kv_segments):
        dq, dk, dv = backward(
            q,
            k[:, :half],
            v[:, :half],
            out,
            lse,
            dout,
            causal=False,
            q_segment_ids=q_segments,
            kv_segment_ids=_first_half(kv_segments),
        )
        return dq, _pad_after(dk), _pad_after(dv)

    def source_after(q, q_segments, out, lse, dout, k, v, kv_segments):
        dq, dk, dv = backward(
            q[:, half:],
            k,
            v,
            out[:, half:],
            lse[:, :, half:],
            dout[:, half:],
            causal=False,
            q_segment_ids=_second_half(q_segments),
            kv_segment_ids=kv_segments,
        )
        return jnp.concatenate([jnp.zeros_like(dq), dq], axis=1), dk, dv

    return jax.lax.cond(
        step <= rank,
        source_before,
        source_after,
        *(q, q_segments, out, lse, dout, k, v, kv_segments),
    )


def _merge(out, lse, block_out, block_lse):
    """Online softmax: fold a block's normalised (out, lse) into the running float32 pair."""
    new_lse = jnp.logaddexp(lse, block_lse)
    # Rows that have seen nothing yet keep lse -inf; subtracting 0 keeps their weights at 0.
    shift = jnp.where(jnp.isfinite(new_lse), new_lse, 0.0)

    def weight(x):  # [b, N, t] -> [b, t, N, 1], to scale outputs
        return jnp.exp(x - shift).transpose(0, 2, 1)[..., None]

    return out * weight(lse) + block_out.astype(jnp.float32) * weight(block_lse), new_lse


def _first_half(segments):
    return None if segments is None else segments[:, : segments.shape[1] // 2]


def _second_half(segments):
    return None if segments is None else segments[:, segments.shape[1] // 2 :]


def _pad_after(x):
    return jnp.concatenate([x, jnp.zeros_like(x)], axis=1)


# --- collectives ------------------------------------------------------------------------------


def _rank(ring: _Ring):
    return jax.lax.axis_index(ring.axis_name) if ring.size > 1 else 0


def _shift(tree, ring: _Ring):
    """Every array of `tree` to the next device on the ring (None leaves stay None)."""
    if ring.size == 1:
        return tree
    perm = [(i, (i + 1) % ring.size) for i in range(ring.size)]
    return jax.tree.map(lambda x: jax.lax.ppermute(x, ring.axis_name, perm), tree)


# Natural layout: device d holds chunks 2d and 2d+1. Zigzag: device r holds r, then 2n-1-r.
# Chunk j goes to device j if j < n, else to device 2n-1-j; so the even chunks (one per device)
# and the odd chunks each move by a permutation of the devices.
def _even_chunk_perm(n: int) -> list[tuple[int, int]]:
    return [(d, 2 * d if 2 * d < n else 2 * n - 1 - 2 * d) for d in range(n)]


def _odd_chunk_perm(n: int) -> list[tuple[int, int]]:
    return [(d, 2 * d + 1 if 2 * d + 1 < n else 2 * n - 2 - 2 * d) for d in range(n)]


def _inverse(perm: list[tuple[int, int]]) -> list[tuple[int, int]]:
    return [(dst, src) for src, dst in perm]


def _to_zigzag(x, ring: _Ring):
    """[b, 2c, ...] holding chunks (2r, 2r+1) -> holding chunks (r, 2n-1-r)."""
    half = x.shape[1] // 2
    from_even = jax.lax.ppermute(x[:, :half], ring.axis_name, _even_chunk_perm(ring.size))
    from_odd = jax.lax.ppermute(x[:, half:], ring.axis_name, _odd_chunk_perm(ring.size))
    # Chunk r has r's parity; chunk 2n-1-r the other one.
    even_rank = _rank(ring) % 2 == 0
    first = jnp.where(even_rank, from_even, from_odd)
    second = jnp.where(even_rank, from_odd, from_even)
    return jnp.concatenate([first, second], axis=1)


def _from_zigzag(x, ring: _Ring):
    """The inverse of `_to_zigzag`."""
    half = x.shape[1] // 2
    first, second = x[:, :half], x[:, half:]
    even_rank = _rank(ring) % 2 == 0
    even_chunk = jnp.where(even_rank, first, second)
    odd_chunk = jnp.where(even_rank, second, first)
    even_chunk = jax.lax.ppermute(even_chunk, ring.axis_name, _inverse(_even_chunk_perm(ring.size)))
    odd_chunk = jax.lax.ppermute(odd_chunk, ring.axis_name, _inverse(_odd_chunk_perm(ring.size)))
    return jnp.concatenate([even_chunk, odd_chunk], axis=1)
