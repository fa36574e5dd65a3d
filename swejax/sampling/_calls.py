"""The engine's device calls: host rows in, the jitted programs run, host rows out.

`DeviceCalls` lays the host's requests out as the device programs take them: per-slot arrays
split over the batch shards like the slots (`row_sharding`), ingest rows in blocks of one shard
each, and the keys and values of preempted sequences moved out of the pool and back in chunks of
pages. A collective engine (a mesh spanning processes) agrees with the other processes on the
number and shape of its calls first (`agreed_buckets`); an engine on one process's devices
decides alone.
"""

from __future__ import annotations

import math

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from swejax.config import EngineConfig
from swejax.models.kv_cache import pool_spec
from swejax.sampling._pages import PageAllocator
from swejax.sampling._processes import agreed_buckets
from swejax.sampling._programs import (
    DecodeProgram,
    IngestProgram,
    jit_decode,
    jit_ingest,
    jit_swap_in,
    jit_swap_out,
)
from swejax.sampling._state import TABLE_DTYPES, SlotTable
from swejax.sampling._streams import stream_words
from swejax.sharding import activation_mesh

# Tokens of one sequence moved to or from the host per swap call: bounds the call's buffers.
SWAP_TOKENS = 4096


class DeviceCalls:
    """Runs the engine's programs over its state (see the module docstring)."""

    def __init__(
        self,
        config: EngineConfig,
        mesh: Mesh | None,
        pages: PageAllocator,
        shardings,
        rows: jax.sharding.Sharding,
        collective: bool,
        model_cfg,
    ):
        self.config, self.mesh, self.pages, self.rows = config, mesh, pages, rows
        self.collective = collective
        self._ingest = jit_ingest(shardings)
        self._decode = jit_decode(shardings, rows)
        self._swapped_rows = _swap_sharding(shardings, mesh, model_cfg.num_kv_heads)
        self._swap_out = jit_swap_out(self._swapped_rows)
        self._swap_in = jit_swap_in(shardings)
        # One chunk of one sequence's pages: [L, swap_pages, page, K, H].
        self._chunk_shape = (
            model_cfg.num_layers,
            self.swap_pages,
            config.page_size,
            model_cfg.num_kv_heads,
            model_cfg.head_dim,
        )
        self._chunk_dtype = np.dtype(jax.numpy.dtype(model_cfg.dtype))

    def buckets(self, local: list[int]) -> list[int]:
        """The page buckets of the coming calls (as many as any process makes, when
        collective)."""
        return agreed_buckets(local) if self.collective else local

    # --- host <-> device ----------------------------------------------------------------

    def to_device(self, host: np.ndarray, sharding=None) -> jax.Array:
        """A per-slot host array ([S, ...] or call rows) at the rows' sharding (or
        `sharding`); each process makes only the shards on its devices, from its own rows of
        `host`."""
        sharding = sharding or self.rows
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    def to_host(self, array: jax.Array) -> np.ndarray:
        """A per-slot device array read back into a host array of its global shape: the rows
        of this process's shards filled, the rest zero."""
        out = np.zeros(array.shape, array.dtype)
        for shard in array.addressable_shards:
            out[shard.index] = np.asarray(shard.data)
        return out

    def slot_table(self, slots, visible: int, running: set[int] | None) -> SlotTable:
        """Every slot's row of a call attending over `visible` pages, `running` the active
        slots it decodes (None: all); other processes' slots are filled in by their own."""
        config, pages = self.config, self.pages
        host = SlotTable(
            np.stack([pages.table_row(i)[:visible] for i in range(config.num_slots)]),
            np.array(
                [
                    min(config.capacity, pages.page_count(i) * config.page_size)
                    for i in range(config.num_slots)
                ]
            ),
            np.array([s.cached for s in slots]),
            np.array([s.pending or 0 for s in slots]),
            np.array([s.active and (running is None or i in running) for i, s in enumerate(slots)]),
            np.array([s.budget for s in slots]),
            np.stack([stream_words(s.stream) for s in slots]),
        )
        arrays = (x.astype(dt) for x, dt in zip(host, TABLE_DTYPES, strict=True))
        return SlotTable(*(self.to_device(x) for x in arrays))

    # --- ingest ---------------------------------------------------------------------------

    @property
    def shard_rows(self) -> int:
        """Rows of each batch shard in an ingest call (`ingest_rows` over all of them, rounded
        up to a multiple of the shards)."""
        shards = self.pages.num_shards
        return math.ceil(min(self.config.ingest_rows, self.config.num_slots) / shards)

    def ingest_calls(self, queue: list[tuple[int, list[int]]]) -> list[tuple[list, int]]:
        """The ingest calls that feed `queue`'s (slot, ids), `ingest_chunk` tokens of each slot
        at a time: (rows, the most pages a row's slot holds) per call."""
        chunk, offset, calls = self.config.ingest_chunk, 0, []
        while True:
            rows = [
                (slot, ids[offset : offset + chunk]) for slot, ids in queue if len(ids) > offset
            ]
            if not rows:
                return calls
            for group in self._by_shard(rows, self.shard_rows):
                calls.append((group, max(self.pages.page_count(slot) for slot, _ in group)))
            offset += chunk

    def _by_shard(self, rows: list, per: int) -> list[list]:
        """(slot, ...) rows cut into calls of at most `per` rows of each shard."""
        shard = self.pages.shard
        parts = [[r for r in rows if shard(r[0]) == g] for g in range(self.pages.num_shards)]
        calls = max(math.ceil(len(part) / per) for part in parts)
        return [[r for part in parts for r in part[c * per : (c + 1) * per]] for c in range(calls)]

    def ingest(self, state, graphdef, params, visible: int, rows, cached: list[int]):
        """One ingest call over (slot, tokens) rows, at most `shard_rows` of each shard, padded
        to full shape: shard g's rows fill block g of the call's rows, as the page pool's
        shards expect. Padding rows feed nothing. `cached[slot]`: where its tokens start."""
        program = IngestProgram(graphdef, visible_pages=visible)
        arrays = self._ingest_arrays(visible, rows, cached)
        with activation_mesh(self.mesh):
            return self._ingest(program, params, state, *arrays)

    def trace_ingest(self, state, graphdef, params, visible: int) -> jax.stages.Traced:
        """The ingest program traced for `visible` pages over rows that feed nothing."""
        program = IngestProgram(graphdef, visible_pages=visible)
        arrays = self._ingest_arrays(visible, [], [])
        with activation_mesh(self.mesh):
            return self._ingest.trace(program, params, state, *arrays)

    def _ingest_arrays(self, visible: int, rows, cached: list[int]) -> tuple[jax.Array, ...]:
        per, shards = self.shard_rows, self.pages.num_shards
        tokens = np.zeros((per * shards, self.config.ingest_chunk), np.int32)
        counts = np.zeros(per * shards, np.int32)
        starts = np.zeros(per * shards, np.int32)
        pages = np.full((per * shards, visible), self.pages.unassigned, np.int32)
        used = [0] * shards
        for slot, part in rows:
            g = self.pages.shard(slot)
            r = g * per + used[g]
            used[g] += 1
            counts[r], starts[r] = len(part), cached[slot]
            tokens[r, : len(part)] = part
            pages[r] = self.pages.table_row(slot)[:visible]
        return tuple(self.to_device(x) for x in (tokens, counts, starts, pages))

    # --- decode ---------------------------------------------------------------------------

    def decode(self, program: DecodeProgram, arguments: tuple):
        """(state, outputs) of one decode call; `arguments` as `Engine.decode_arguments`."""
        with activation_mesh(self.mesh):
            return self._decode(program, *arguments)

    def trace_decode(self, program: DecodeProgram, arguments: tuple) -> jax.stages.Traced:
        with activation_mesh(self.mesh):
            return self._decode.trace(program, *arguments)

    # --- swapping sequences out of the pool and back -----------------------------------------

    @property
    def swap_pages(self) -> int:
        """Pages of one sequence per swap call."""
        return max(1, min(self.config.pages_per_slot, SWAP_TOKENS // self.config.page_size))

    def swap_out(self, state, slots: dict[int, int]) -> dict[int, list]:
        """Copy the first `slots[slot]` pages of each slot to the host: slot -> its chunks of
        (k, v) [L, n, page, K, H], in page order. Reads only: the pool is unchanged."""
        chunks: dict[int, list] = {slot: [] for slot in slots}
        for rows, table in self._swap_calls(slots):
            with activation_mesh(self.mesh):
                k, v = self._swap_out(state, self.to_device(table))
            k, v = self.to_host(k), self.to_host(v)
            for r, slot, count in rows:
                chunks[slot].append((k[r, :, :count].copy(), v[r, :, :count].copy()))
        return chunks

    def swap_in(self, state, slots: dict[int, list]):
        """Write each slot's chunks (from `swap_out`) into its pages now held, in order."""
        counts = {slot: sum(k.shape[1] for k, _ in parts) for slot, parts in slots.items()}
        place = {slot: 0 for slot in slots}
        for rows, table in self._swap_calls(counts):
            shape = (len(table), *self._chunk_shape)
            k, v = np.zeros(shape, self._chunk_dtype), np.zeros(shape, self._chunk_dtype)
            for r, slot, count in rows:
                part_k, part_v = slots[slot][place[slot]]
                place[slot] += 1
                k[r, :, :count], v[r, :, :count] = part_k, part_v
            with activation_mesh(self.mesh):
                k, v = (self.to_device(x, self._swapped_rows) for x in (k, v))
                state = self._swap_in(state, self.to_device(table), k, v)
        return state

    def _swap_calls(self, slots: dict[int, int]):
        """(rows, page table [shards, swap_pages]) per swap call: one row per shard per call,
        each a chunk of up to `swap_pages` of a slot's first `slots[slot]` pages; rows as
        (row, slot, pages in the chunk)."""
        n = self.swap_pages
        chunks = [
            (slot, start, min(n, count - start))
            for slot, count in slots.items()
            for start in range(0, count, n)
        ]
        calls = self._by_shard(chunks, 1) if chunks else []
        for _ in self.buckets([n] * len(calls))[len(calls) :]:  # another process's calls
            calls.append([])
        for call in calls:
            table = np.full((self.pages.num_shards, n), self.pages.unassigned, np.int32)
            rows = []
            for slot, start, count in call:
                g = self.pages.shard(slot)
                table[g, :count] = self.pages.table_row(slot)[start : start + count]
                rows.append((g, slot, count))
            yield rows, table


def _swap_sharding(shardings, mesh: Mesh | None, kv_heads: int) -> jax.sharding.Sharding:
    """Where a swap call's rows of pages [R, L, n, page, K, H] live: rows split like the pool's
    pages, KV heads like its heads."""
    if mesh is None:
        return shardings.key
    pool = pool_spec(mesh, shardings.cache.page_axes, kv_heads)
    return NamedSharding(mesh, PartitionSpec(pool[1], None, None, None, pool[3], None))
