"""The collectives of a compiled XLA program, read from its HLO text, and the bytes they move:
once per execution of the program, and per iteration of its main loop (the decode loop, a
`jax.lax.while_loop` with a data-dependent condition), split into collectives that stay inside
one host and those whose groups span hosts. A layout that gathers every layer's weights across
hosts each decode step shows up here as gigabytes per step; a good one as none.

Partition ids: the ids in `replica_groups` and `source_target_pairs` are partition ids (JAX
compiles one replica, and every SPMD collective uses global ids); for a program whose inputs are
`NamedSharding`s over `mesh`, partition i runs on `mesh.devices.flat[i]`, not on `jax.devices()[i]`
(tests/test_collectives.py runs a program on a permuted mesh to check it).

What the compilers write (JAX 0.10): groups in three syntaxes, explicit `{{0,1},{2,3}}`, iota
`[2,4]<=[8]` / `[4,2]<=[2,4]T(1,0)`, and mesh axes `mesh['a'=2,'b'=4], device_ids=(...) {'b'}`.
The CPU compiler annotates a counted while with `"known_trip_count":{"n":"3"}` in its
backend_config; the TPU compiler writes no trip count, so a loop `i < N` counting from a constant
by a constant is read off its condition, body and initial tuple. The TPU compiler makes
collective-permutes asynchronous (`collective-permute-start`, whose tuple holds the input and
output buffers, then `-done`): a `*-start` counts once, with its `*-done`'s shape; collectives
wrapped in `async-start` computations count once, inside them. Where the compilers put a
collective differs too: in the engine's decode program (tiny model, fsdp=2, tensor=4) the CPU
compiler was seen to hoist the weights' all-gathers out of the decode loop (once per call) where
the TPU compiler gathers them every step: per-step figures for a TPU come from the TPU's text.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence

import numpy as np

_OPS = {"all-gather", "all-reduce", "reduce-scatter", "all-to-all", "collective-permute"}
_OPS |= {"ragged-all-to-all", "collective-broadcast"}


@dataclasses.dataclass(frozen=True)
class Collective:
    """One collective instruction, where the program runs it."""

    op: str  # "all-gather", "all-reduce", "reduce-scatter", "all-to-all", "collective-permute"...
    output_bytes: int  # its result on one device, per execution (a tuple's elements summed)
    groups: tuple[tuple[int, ...], ...]  # partition ids; collective-permute: (source, target)s
    executions: int  # per execution of its region: the known trip counts of the loops around it
    in_loop: bool  # inside the main loop (its body or condition)


@dataclasses.dataclass(frozen=True)
class CollectiveBytes:
    """Output bytes per device: once per call outside the main loop, per iteration inside it."""

    per_call_within_host: int
    per_call_across_hosts: int
    per_step_within_host: int
    per_step_across_hosts: int
    ops: dict[str, int]  # op -> bytes per call plus bytes per step, for a report


@dataclasses.dataclass(frozen=True)
class _Instruction:
    name: str
    shape: str
    opcode: str
    operands: str  # as written: names, or a constant's literal
    attrs: str  # with quoted strings blanked, so nothing in metadata is taken for an attribute
    trip_count: int | None  # "known_trip_count" from the backend_config
    root: bool

    @property
    def operand_names(self) -> list[str]:
        return re.findall(r"%([^\s,()]+)", self.operands)

    def attr(self, key: str) -> str | None:
        """`key`'s value: a word, or a braced list such as `{%a, %b}`."""
        found = re.search(rf"(?:^|[\s,]){key}=(\{{[^}}]*\}}|[^\s,]+)", self.attrs)
        return found.group(1) if found else None


@dataclasses.dataclass(frozen=True)
class _Module:
    computations: dict[str, dict[str, _Instruction]]  # name -> its instructions by name
    entry: str
    num_partitions: int


def program_collectives(hlo_text: str) -> list[Collective]:
    """Every collective of the compiled program, with how often it runs: those in the main loop
    (the ENTRY computation's while of unknown trip count, body and condition) per iteration of
    it, the rest per call. Inside, a counted loop multiplies by its trip count (its condition by
    one more); a loop of unknown trip count elsewhere counts once, a lower bound; of a
    conditional's branches the one with the most bytes counts, once."""
    module = _parse(hlo_text)
    entry = module.computations[module.entry]
    open_ended = [
        i for i in entry.values() if i.opcode == "while" and _trips(module, entry, i) is None
    ]
    if len(open_ended) > 1:
        names = ", ".join(i.name for i in open_ended)
        raise ValueError(
            f"several while loops of unknown trip count in ENTRY ({names}): which is main?"
        )
    main = open_ended[0].name if open_ended else None
    return _walk(module, module.entry, 1, False, main)


def collective_bytes(hlo_text: str, partition_hosts: Sequence[int]) -> CollectiveBytes:
    """Bytes of `program_collectives`, per call and per main-loop step. partition_hosts[i] is the
    host of partition i (of `mesh.devices.flat[i]`); a collective is across hosts when any one of
    its groups (or permute pairs) holds partitions of two hosts."""
    totals = {(step, across): 0 for step in (False, True) for across in (False, True)}
    ops: dict[str, int] = {}
    for c in program_collectives(hlo_text):
        if any(p >= len(partition_hosts) for group in c.groups for p in group):
            raise ValueError(f"{c.op} groups {c.groups}: only {len(partition_hosts)} hosts given")
        across = any(len({partition_hosts[p] for p in group}) > 1 for group in c.groups)
        totals[c.in_loop, across] += _moved(c)
        ops[c.op] = ops.get(c.op, 0) + _moved(c)
    return CollectiveBytes(
        per_call_within_host=totals[False, False],
        per_call_across_hosts=totals[False, True],
        per_step_within_host=totals[True, False],
        per_step_across_hosts=totals[True, True],
        ops=ops,
    )


def _walk(module: _Module, name: str, executions: int, in_loop: bool, main: str | None):
    """The collectives reached from computation `name`, each run `executions` times."""
    found: list[Collective] = []
    computation = _computation(module, name)
    # An async collective's result is its -done's shape: the -start's tuple also holds inputs.
    done = {
        operand: inst.shape
        for inst in computation.values()
        if inst.opcode.endswith("-done")
        for operand in inst.operand_names
    }
    for inst in computation.values():
        op = inst.opcode.removesuffix("-start")
        if op in _OPS:
            shape = inst.shape
            if op != inst.opcode:
                if inst.name not in done:
                    raise ValueError(f"no -done for {inst.opcode} %{inst.name}")
                shape = done[inst.name]
            groups = _groups(inst, module.num_partitions)
            found.append(Collective(op, _shape_bytes(shape), groups, executions, in_loop))
        elif inst.opcode == "while":
            body, condition = _called(inst.attr("body")), _called(inst.attr("condition"))
            if name == module.entry and inst.name == main:
                runs, in_body, checks = 1, True, 1
            else:
                trips = _trips(module, computation, inst)
                runs, in_body = (1 if trips is None else trips), in_loop
                checks = 1 if trips is None else trips + 1
            found += _walk(module, body[0], executions * runs, in_body, main)
            found += _walk(module, condition[0], executions * checks, in_body, main)
        elif inst.opcode == "conditional":
            keys = ("branch_computations", "true_computation", "false_computation")
            branches = [b for key in keys for b in _called(inst.attr(key))]
            taken = [_walk(module, b, executions, in_loop, main) for b in branches]
            found += max(taken, key=lambda cs: sum(_moved(c) for c in cs), default=[])
        elif inst.opcode not in ("async-update", "async-done"):  # their start holds the work
            called = _called(inst.attr("calls")) + _called(inst.attr("called_computations"))
            if inst.opcode == "call":
                called += _called(inst.attr("to_apply"))  # elsewhere to_apply is a reducer
            for callee in called:
                found += _walk(module, callee, executions, in_loop, main)
    return found


def _called(value: str | None) -> list[str]:
    return re.findall(r"%?([^\s{},%]+)", value) if value else []


def _computation(module: _Module, name: str) -> dict[str, _Instruction]:
    if name not in module.computations:
        raise ValueError(f"HLO text calls %{name}, which it does not define")
    return module.computations[name]


def _moved(c: Collective) -> int:
    return c.output_bytes * c.executions


# ---- groups ---------------------------------------------------------------------------------


def _groups(inst: _Instruction, num_partitions: int) -> tuple[tuple[int, ...], ...]:
    if inst.opcode.startswith("collective-permute"):
        pairs = _after(inst, "source_target_pairs")
        if pairs is None:
            raise ValueError(f"{inst.opcode} %{inst.name} has no source_target_pairs")
        return _explicit(pairs)
    text = _after(inst, "replica_groups") or "{}"  # none written: all partitions
    if text.startswith("{"):
        return _explicit(text) or (tuple(range(num_partitions)),)
    if text.startswith("["):
        iota = re.match(r"\[([\d,]+)\]<=\[([\d,]+)\](?:T\(([\d,]+)\))?", text)
        if iota is None:
            raise ValueError(f"cannot read replica_groups of %{inst.name}: {text[:80]}")
        groups = _iota(_ints(iota[2]), _ints(iota[3]) if iota[3] else None)
        return tuple(map(tuple, groups.reshape(_ints(iota[1])).tolist()))
    if text.startswith("mesh["):
        return _mesh_groups(text, inst.name)
    raise ValueError(f"cannot read replica_groups of %{inst.name}: {text[:80]}")


def _after(inst: _Instruction, key: str) -> str | None:
    """The attributes from the value of `key` on."""
    found = re.search(rf"(?:^|[\s,]){key}=", inst.attrs)
    return inst.attrs[found.end() :] if found else None


def _explicit(text: str) -> tuple[tuple[int, ...], ...]:
    """`{{0,1},{2,3}}` (the text may go on after the closing brace)."""
    body = text[: _closing(text, 0) + 1]
    return tuple(_ints(g) for g in re.findall(r"\{([^{}]*)\}", body[1:-1]))


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def _iota(reshape: Sequence[int], perm: Sequence[int] | None) -> np.ndarray:
    """arange, reshaped to `reshape` and transposed by `perm`, flattened."""
    ids = np.arange(math.prod(reshape)).reshape(reshape)
    return (ids.transpose(perm) if perm else ids).ravel()


def _mesh_groups(text: str, name: str) -> tuple[tuple[int, ...], ...]:
    """`mesh['a'=2,'b'=4], device_ids=([2,4]T(1,0)) {'b'}`: the mesh's devices (`device_ids` in
    mesh order, else 0..n-1) grouped by their coordinates off the listed axes, which may be
    sub-axes `'a':(pre)size`: `size` of the axis's factors [pre, size, rest], major to minor."""
    mesh = re.match(
        r"mesh\[([^\]]*)\](?:,\s*device_ids=\((\[[\d,]+\](?:T\([\d,]+\))?|[\d,\s]+)\))?\s*\{([^}]*)\}",
        text,
    )
    if mesh is None:
        raise ValueError(f"cannot read the mesh replica_groups of %{name}: {text[:120]}")
    axes = {k: int(v) for k, v in re.findall(r"'?([^'=,\s]+)'?=(\d+)", mesh[1])}
    iota = re.fullmatch(r"\[([\d,]+)\](?:T\(([\d,]+)\))?", mesh[2] or "")
    if iota:
        devices = _iota(_ints(iota[1]), _ints(iota[2]) if iota[2] else None)
    else:
        devices = np.array(_ints(mesh[2])) if mesh[2] else np.arange(math.prod(axes.values()))
    coords = np.unravel_index(np.arange(devices.size), tuple(axes.values()))
    key = [c.copy() for c in coords]
    for axis, pre, size in re.findall(r"'?([^',:\s]+)'?(?::\((\d+)\)(\d+))?", mesh[3]):
        if axis not in axes or axes[axis] % (int(pre or 1) * int(size or 1)):
            raise ValueError(f"mesh replica_groups of %{name} do not fit their mesh: {text[:120]}")
        c = key[list(axes).index(axis)]
        rest = axes[axis] // (int(pre) * int(size)) if size else 1
        c -= c // rest % (int(size) if size else axes[axis]) * rest  # that factor's digit, zeroed
    groups: dict[tuple[int, ...], list[int]] = {}
    for position, device in enumerate(devices.tolist()):
        groups.setdefault(tuple(int(k[position]) for k in key), []).append(device)
    return tuple(tuple(g) for g in groups.values())


# ---- shapes ---------------------------------------------------------------------------------

_BITS = {"pred": 8, "s2": 2, "u2": 2, "s4": 4, "u4": 4, "s8": 8, "u8": 8, "s16": 16, "u16": 16}
_BITS |= {"f16": 16, "bf16": 16, "s32": 32, "u32": 32, "f32": 32, "s64": 64, "u64": 64}
_BITS |= {"f64": 64, "c64": 64, "c128": 128}


def _shape_bytes(shape: str) -> int:
    """Bytes of an array or tuple shape; layouts `{1,0:T(8,128)S(1)}` are skipped."""
    total = 0
    for dtype, dims in re.findall(r"([a-z][a-z0-9]*)\[([^\]]*)\]", shape):
        bits = _BITS.get(dtype) or (
            8 if dtype.startswith("f8") else 4 if dtype.startswith("f4") else 0
        )
        if not bits:
            raise ValueError(f"unknown element type {dtype!r} in shape {shape}")
        elements = math.prod(int(d.replace("<=", "")) for d in dims.split(",") if d)
        total += -(-elements * bits // 8)
    return total


# ---- loops ----------------------------------------------------------------------------------


def _trips(module: _Module, caller: dict[str, _Instruction], loop: _Instruction) -> int | None:
    """The loop's trip count: the compiler's annotation, else read off a loop that counts a
    tuple element from a constant by a constant up to a constant (the TPU compiler's scans)."""
    if loop.trip_count is not None:
        return loop.trip_count
    condition = _computation(module, _called(loop.attr("condition"))[0])
    body = _computation(module, _called(loop.attr("body"))[0])
    compare = _source(module, condition, _root(condition).name)
    if compare.opcode != "compare" or len(compare.operand_names) != 2:
        return None
    lhs, rhs = (_source(module, condition, n) for n in compare.operand_names)
    direction = compare.attr("direction")
    if lhs.opcode == "constant":  # N > i is i < N
        lhs, rhs = rhs, lhs
        direction = {"GT": "LT", "GE": "LE"}.get(direction or "")
    limit, index = _constant(rhs), _element(lhs)
    init, update = _source(module, caller, loop.operand_names[0]), _root(body)
    if limit is None or direction not in ("LT", "LE") or index is None:
        return None
    if init.opcode != "tuple" or update.opcode != "tuple":
        return None
    start = _constant(_source(module, caller, init.operand_names[index]))
    update = _source(module, body, update.operand_names[index])
    steps = [_source(module, body, n) for n in update.operand_names]
    steps = [_constant(t) for t in steps if _element(t) != index]
    if update.opcode != "add" or start is None or len(steps) != 1 or not (steps[0] or 0) > 0:
        return None
    return max(0, -(-(limit + (direction == "LE") - start) // steps[0]))


def _root(computation: dict[str, _Instruction]) -> _Instruction:
    root = next((inst for inst in computation.values() if inst.root), None)
    if root is None:
        raise ValueError(f"an HLO computation without a ROOT: {list(computation)[:3]}")
    return root


def _source(module: _Module, computation: dict[str, _Instruction], name: str) -> _Instruction:
    """What `name` computes, through copies, bitcasts, and fusions of one instruction on their
    parameters (the CPU compiler's `wrapped_add`), which read as that instruction."""
    inst = computation[name]
    while inst.opcode in ("copy", "bitcast") and inst.operand_names:
        inst = computation[inst.operand_names[0]]
    if inst.opcode != "fusion":
        return inst
    fused = _computation(module, _called(inst.attr("calls"))[0])
    wrapped = _root(fused)
    params = [fused[n] for n in wrapped.operand_names]
    if not params or any(p.opcode != "parameter" for p in params):
        return inst
    operands = ", ".join("%" + inst.operand_names[int(p.operands)] for p in params)
    return dataclasses.replace(wrapped, operands=operands)


def _constant(inst: _Instruction) -> int | None:
    integer = inst.opcode == "constant" and re.fullmatch(r"-?\d+", inst.operands)
    return int(inst.operands) if integer else None


def _element(inst: _Instruction) -> int | None:
    """k when `inst` is get-tuple-element(parameter, index=k)."""
    index = inst.attr("index")
    return int(index) if inst.opcode == "get-tuple-element" and index else None


# ---- text -----------------------------------------------------------------------------------

_HEADER = re.compile(r"(ENTRY\s+)?%?([^\s(]+)\s*\(.*\)\s*->\s*.*\{\s*")
_LINE = re.compile(r"\s*(ROOT\s+)?%?([^\s=]+)\s*=\s*(.*)")
_TRIPS = re.compile(r'known_trip_count\\?"\s*:\s*\{\s*\\?"n\\?"\s*:\s*\\?"(\d+)')


def _parse(text: str) -> _Module:
    header = re.search(r"^HloModule .*$", text, re.MULTILINE)
    if header is None:
        raise ValueError("not HLO text: no HloModule line")
    replicas = re.search(r"replica_count=(\d+)", header[0])
    if replicas and int(replicas[1]) > 1:
        raise ValueError("several replicas: the ids in groups would not be partition ids")
    partitions = re.search(r"num_partitions=(\d+)", header[0])
    computations: dict[str, dict[str, _Instruction]] = {}
    entry, current = None, None
    for line in text[header.end() :].splitlines():
        if current is None:
            found = _HEADER.fullmatch(line)
            if found:
                current = computations.setdefault(found[2], {})
                entry = found[2] if found[1] else entry
        elif line.strip() == "}":
            current = None
        elif line.strip():
            inst = _instruction(line)
            current[inst.name] = inst
    if entry is None:
        raise ValueError("not HLO text: no ENTRY computation")
    return _Module(computations, entry, int(partitions[1]) if partitions else 1)


def _instruction(line: str) -> _Instruction:
    found = _LINE.fullmatch(line)
    rest = found[3] if found else ""
    shape_end = _closing(rest, 0) + 1 if rest.startswith("(") else rest.find(" ")
    opcode = re.match(r"\s*([a-z][\w-]*)\(", rest[shape_end:]) if shape_end > 0 else None
    if found is None or opcode is None:
        raise ValueError(f"cannot read HLO instruction: {line.strip()[:160]}")
    start = shape_end + opcode.end() - 1
    end = _closing(rest, start)
    attrs = rest[end + 1 :]
    trips = _TRIPS.search(attrs)
    return _Instruction(
        name=found[2],
        shape=rest[:shape_end],
        opcode=opcode[1],
        operands=rest[start + 1 : end].strip(),
        attrs=re.sub(r'"(?:[^"\\]|\\.)*"', '""', attrs),
        trip_count=int(trips[1]) if trips else None,
        root=bool(found[1]),
    )


def _closing(text: str, start: int) -> int:
    """Index of the bracket closing the one at `start`."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] in "([{":
            depth += 1
        elif text[i] in ")]}":
            depth -= 1
            if depth == 0:
                return i
    raise ValueError(f"unbalanced brackets in HLO text: {text[start : start + 120]}")
