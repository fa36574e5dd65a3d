"""Hugging Face safetensors checkpoints in and out of a (sharded) swejax Qwen2.

Loading never materialises a whole tensor on one host: each device's shard is read straight
from the memory-mapped safetensors file by `jax.make_array_from_callback`, so a checkpoint
larger than a host's memory loads on a pod. Saving gathers one file's tensors at a time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import shutil
from typing import Any

import jax
import ml_dtypes
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils
from jax.sharding import Mesh
from safetensors import safe_open
from safetensors.numpy import save_file

from swejax.models.build import abstract_model, param_shardings
from swejax.models.config import ModelConfig, from_hf_config, read_hf_config, to_hf_config
from swejax.models.qwen2 import Qwen2
from swejax.progress import reported

log = logging.getLogger(__name__)

Block = tuple[tuple[int, int], ...]  # the (start, stop) read along each dim of an HF tensor

_NP_DTYPES = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16}
_SHARD_BYTES = 4 * 2**30  # largest safetensors file written


@dataclasses.dataclass(frozen=True)
class _Weight:
    """How one swejax parameter maps to Hugging Face tensors.

    The HF tensor (one per layer for stacked weights) is reshaped to `groups` flattened, then
    transposed by `perm` to give the swejax layout:
    ours = hf.reshape(*flat(groups)).transpose(perm).
    """

    path: tuple[str, ...]
    hf_name: str  # "{i}" is the layer index for stacked weights
    groups: tuple[tuple[int, ...], ...]  # per HF dim, the swejax-side sizes it splits into
    perm: tuple[int, ...]

    @property
    def stacked(self) -> bool:
        return "{i}" in self.hf_name

    @property
    def hf_shape(self) -> tuple[int, ...]:
        return tuple(math.prod(g) for g in self.groups)

    def to_ours(self, hf: np.ndarray) -> np.ndarray:
        return hf.reshape([s for g in self.groups for s in g]).transpose(self.perm)

    def to_hf(self, ours: np.ndarray) -> np.ndarray:
        return ours.transpose(np.argsort(self.perm)).reshape(self.hf_shape)


def weight_table(cfg: ModelConfig) -> list[_Weight]:
    D, F, V = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size
    N, K, H = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    layer = "model.layers.{i}."
    table = [
        _Weight(("embed",), "model.embed_tokens.weight", ((V,), (D,)), (0, 1)),
        _Weight(("final_norm", "scale"), "model.norm.weight", ((D,),), (0,)),
        _Weight(("layers", "attn_norm", "scale"), layer + "input_layernorm.weight", ((D,),), (0,)),
        _Weight(
            ("layers", "mlp_norm", "scale"),
            layer + "post_attention_layernorm.weight",
            ((D,),),
            (0,),
        ),
        _Weight(
            ("layers", "attn", "q_kernel"),
            layer + "self_attn.q_proj.weight",
            ((N, H), (D,)),
            (2, 0, 1),
        ),
        _Weight(
            ("layers", "attn", "k_kernel"),
            layer + "self_attn.k_proj.weight",
            ((K, H), (D,)),
            (2, 0, 1),
        ),
        _Weight(
            ("layers", "attn", "v_kernel"),
            layer + "self_attn.v_proj.weight",
            ((K, H), (D,)),
            (2, 0, 1),
        ),
        _Weight(("layers", "attn", "q_bias"), layer + "self_attn.q_proj.bias", ((N, H),), (0, 1)),
        _Weight(("layers", "attn", "k_bias"), layer + "self_attn.k_proj.bias", ((K, H),), (0, 1)),
        _Weight(("layers", "attn", "v_bias"), layer + "self_attn.v_proj.bias", ((K, H),), (0, 1)),
        _Weight(
            ("layers", "attn", "o_kernel"),
            layer + "self_attn.o_proj.weight",
            ((D,), (N, H)),
            (1, 2, 0),
        ),
        _Weight(
            ("layers", "mlp", "gate_kernel"), layer + "mlp.gate_proj.weight", ((F,), (D,)), (1, 0)
        ),
        _Weight(("layers", "mlp", "up_kernel"), layer + "mlp.up_proj.weight", ((F,), (D,)), (1, 0)),
        _Weight(
            ("layers", "mlp", "down_kernel"), layer + "mlp.down_proj.weight", ((D,), (F,)), (1, 0)
        ),
    ]
    if not cfg.tie_word_embeddings:
        table.append(_Weight(("lm_head",), "lm_head.weight", ((V,), (D,)), (1, 0)))
    return table


def _hf_names(w: _Weight, num_layers: int) -> list[str]:
    return [w.hf_name.format(i=i) for i in range(num_layers)] if w.stacked else [w.hf_name]


@dataclasses.dataclass
class ReadLog:
    """What one process read from a checkpoint's files: each HF tensor's blocks and their bytes.

    On a pod, a process reads the blocks its own devices hold and no other, each once."""

    blocks: dict[tuple[str, Block], int] = dataclasses.field(default_factory=dict)
    bytes_read: int = 0  # more than the blocks' sum only if a block was read twice

    def record(self, name: str, block: Block, nbytes: int) -> None:
        self.blocks[(name, block)] = nbytes
        self.bytes_read += nbytes


class _TensorFiles:
    """Lazily opened safetensors files of one checkpoint, by tensor name."""

    def __init__(self, checkpoint_dir: str, stack: contextlib.ExitStack, read_log: ReadLog):
        self.read_log = read_log
        index_path = os.path.join(checkpoint_dir, "model.safetensors.index.json")
        single_path = os.path.join(checkpoint_dir, "model.safetensors")
        if os.path.isfile(index_path):
            with open(index_path) as f:
                weight_map = json.load(f)["weight_map"]
        elif os.path.isfile(single_path):
            with safe_open(single_path, framework="numpy") as f:
                weight_map = {name: "model.safetensors" for name in f.keys()}  # noqa: SIM118
        else:
            raise FileNotFoundError(
                f"no model.safetensors or model.safetensors.index.json in {checkpoint_dir!r}"
            )
        self._dir, self._stack, self.weight_map = checkpoint_dir, stack, weight_map
        self._open: dict[str, Any] = {}

    def slice(self, name: str):
        file = self.weight_map[name]
        if file not in self._open:
            path = os.path.join(self._dir, file)
            self._open[file] = self._stack.enter_context(safe_open(path, framework="numpy"))
        return self._open[file].get_slice(name)


def _check_tensors(table: list[_Weight], files: _TensorFiles, num_layers: int) -> None:
    """Every expected tensor exists with its expected shape; unexpected ones are reported."""
    expected = set()
    for w in table:
        for name in _hf_names(w, num_layers):
            expected.add(name)
            if name not in files.weight_map:
                raise ValueError(
                    f"checkpoint is missing tensor {name!r} (expected shape {w.hf_shape})"
                )
            shape = tuple(files.slice(name).get_shape())
            if shape != w.hf_shape:
                raise ValueError(
                    f"checkpoint tensor {name!r} has shape {shape}, the config implies {w.hf_shape}"
                )
    ignored = sorted(set(files.weight_map) - expected - {"lm_head.weight"})
    if ignored:
        log.warning(
            "ignoring %d checkpoint tensors not used by Qwen2: %s", len(ignored), ignored[:5]
        )


def _read_block(w: _Weight, files: _TensorFiles, name: str, index: tuple[slice, ...]) -> np.ndarray:
    """The block of one layer's tensor at `index` (swejax layout), reading little more than it.

    Each HF dim splits into a group of swejax-side dims; the group's outer dim is read by range
    and its inner dims whole, then the inner dims are sliced after the reshape.
    """
    inter_sizes = [s for g in w.groups for s in g]
    inter = [slice(None)] * len(inter_sizes)
    for ours_dim, inter_dim in enumerate(w.perm):
        inter[inter_dim] = index[ours_dim]
    read, after_reshape, block_shape, dim = [], [], [], 0
    for group in w.groups:
        outer = range(inter_sizes[dim])[inter[dim]]
        inner = math.prod(group[1:])
        read.append(slice(outer.start * inner, (outer.start + len(outer)) * inner))
        block_shape += [len(outer), *group[1:]]
        after_reshape += [slice(None)] + inter[dim + 1 : dim + len(group)]
        dim += len(group)
    raw = files.slice(name)[tuple(read)]
    files.read_log.record(name, tuple((r.start, r.stop) for r in read), raw.nbytes)
    return raw.reshape(block_shape)[tuple(after_reshape)].transpose(w.perm)


def _normalize(index: tuple[slice, ...], shape: tuple[int, ...]) -> tuple[slice, ...]:
    return tuple(slice(*s.indices(n)[:2]) for s, n in zip(index, shape, strict=True))


def _load_array(w: _Weight, files: _TensorFiles, variable, sharding, np_dtype) -> jax.Array:
    shape = tuple(variable.shape)
    cache: dict[tuple, np.ndarray] = {}  # replicated shards are read once, not once per device

    def shard(index: tuple[slice, ...]) -> np.ndarray:
        index = _normalize(index, shape)
        key = tuple((s.start, s.stop) for s in index)
        if key not in cache:
            if w.stacked:
                layers = range(shape[0])[index[0]]
                blocks = [_read_block(w, files, w.hf_name.format(i=i), index[1:]) for i in layers]
                cache[key] = np.stack(blocks).astype(np_dtype)
            else:
                cache[key] = _read_block(w, files, w.hf_name, index).astype(np_dtype)
        return cache[key]

    return jax.make_array_from_callback(shape, sharding, shard)


def _set_path(state: nnx.State, path: tuple[str, ...], value: jax.Array) -> None:
    node = state
    for key in path[:-1]:
        node = node[key]
    node[path[-1]].set_value(value)


def load_hf_checkpoint(
    path: str,
    dtype: str = "float32",
    mesh: Mesh | None = None,
    param_dtype: str | None = None,
    read_log: ReadLog | None = None,
    **runtime: Any,
) -> Qwen2:
    """A Qwen2 from a Hugging Face checkpoint directory (config.json + safetensors).

    `dtype` is the compute dtype and, unless `param_dtype` is given, the parameter dtype. With a
    mesh, every parameter is placed at its sharding as it is read, each process reading only
    its own devices' blocks; `read_log`, when given, records them.
    """
    if not os.path.isdir(path):
        raise FileNotFoundError(f"checkpoint directory {path!r} does not exist")
    cfg = from_hf_config(
        read_hf_config(path), dtype=dtype, param_dtype=param_dtype or dtype, **runtime
    )
    abstract = abstract_model(cfg)
    graphdef, state = nnx.split(abstract)
    shardings = param_shardings(abstract, mesh)
    np_dtype = _NP_DTYPES[cfg.param_dtype]
    read_log = ReadLog() if read_log is None else read_log
    with contextlib.ExitStack() as stack:
        files = _TensorFiles(path, stack, read_log)
        table = weight_table(cfg)
        _check_tensors(table, files, cfg.num_layers)
        process = (jax.process_index(), jax.process_count())
        for w in reported(table, f"loading {path}", "weight", process=process):
            variable = _lookup(state, w.path)
            sharding = _lookup(shardings, w.path)
            _set_path(state, w.path, _load_array(w, files, variable, sharding, np_dtype))
    total = sum(math.prod(w.hf_shape) * (cfg.num_layers if w.stacked else 1) for w in table)
    log.info(
        "process %d read %.1f MiB of the checkpoint's %.1f MiB of weights",
        jax.process_index(),
        read_log.bytes_read / 2**20,
        total * np.dtype(_NP_DTYPES[cfg.param_dtype]).itemsize / 2**20,
    )
    return nnx.merge(graphdef, state)


def _lookup(tree, path: tuple[str, ...]):
    for key in path:
        tree = tree[key]
    return tree


def _to_host(array: jax.Array) -> np.ndarray:
    if array.is_fully_addressable:
        return np.asarray(jax.device_get(array))
    return np.asarray(multihost_utils.process_allgather(array, tiled=True))


def _file_plan(table: list[_Weight], cfg: ModelConfig) -> list[list[tuple[_Weight, int | None]]]:
    """Group (weight, layer) pairs into files of at most _SHARD_BYTES."""
    itemsize = np.dtype(_NP_DTYPES[cfg.param_dtype]).itemsize
    files: list[list[tuple[_Weight, int | None]]] = [[]]
    size = 0
    for w in table:
        for layer in range(cfg.num_layers) if w.stacked else [None]:
            nbytes = math.prod(w.hf_shape) * itemsize
            if files[-1] and size + nbytes > _SHARD_BYTES:
                files.append([])
                size = 0
            files[-1].append((w, layer))
            size += nbytes
    return files


def save_hf_checkpoint(model: Qwen2, out_dir: str, tokenizer: Any = None) -> list[str]:
    """Write safetensors (sharded with an index above 4 GiB) and config.json; return the files."""
    cfg = model.cfg
    state = nnx.state(model)
    table = weight_table(cfg)
    plan = _file_plan(table, cfg)
    names = (
        ["model.safetensors"]
        if len(plan) == 1
        else [f"model-{k + 1:05d}-of-{len(plan):05d}.safetensors" for k in range(len(plan))]
    )
    writer = jax.process_index() == 0
    if writer:
        os.makedirs(out_dir, exist_ok=True)
    weight_map: dict[str, str] = {}
    process = (jax.process_index(), jax.process_count())
    files = reported(
        list(zip(names, plan, strict=True)), f"writing {out_dir}", "file", process=process
    )
    for file_name, entries in files:
        tensors: dict[str, np.ndarray] = {}
        for w, layer in entries:
            array = _lookup(state, w.path).get_value()
            # One layer at a time: a stacked 72B weight gathered whole would not fit a host.
            ours = _to_host(array if layer is None else array[layer])
            name = w.hf_name.format(i=layer)
            tensors[name] = np.ascontiguousarray(w.to_hf(ours))
            weight_map[name] = file_name
        if writer:
            save_file(tensors, os.path.join(out_dir, file_name), metadata={"format": "pt"})
    if writer:
        if len(names) > 1:
            itemsize = np.dtype(_NP_DTYPES[cfg.param_dtype]).itemsize
            total = sum(math.prod(w.hf_shape) * itemsize for f in plan for w, _ in f)
            index = {"metadata": {"total_size": total}, "weight_map": weight_map}
            with open(os.path.join(out_dir, "model.safetensors.index.json"), "w") as f:
                json.dump(index, f, indent=2)
        with open(os.path.join(out_dir, "config.json"), "w") as f:
            json.dump(to_hf_config(cfg, torch_dtype=cfg.param_dtype), f, indent=2)
        if tokenizer is not None:
            tokenizer.save_pretrained(out_dir)
    return [os.path.join(out_dir, n) for n in names]


# Files that travel with a checkpoint but are not weights: tokenizer, chat template, decoding.
_SIDE_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "generation_config.json",
)


def copy_side_files(source_dir: str, target_dir: str) -> list[str]:
    """Copy the tokenizer and generation files of a checkpoint; return the names copied."""
    copied = []
    for name in _SIDE_FILES:
        source = os.path.join(source_dir, name)
        if os.path.isfile(source) and jax.process_index() == 0:
            shutil.copyfile(source, os.path.join(target_dir, name))
            copied.append(name)
    return copied
