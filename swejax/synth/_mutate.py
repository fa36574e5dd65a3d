"""Bug injection: AST-located mutations applied as byte-span edits of the original source.

Editing spans instead of unparsing the tree keeps the rest of the file byte for byte, so the gold
patch is a few lines and the buggy file still reads like its authors wrote it. Only code inside
functions is mutated (plus the functions' default values): module-level code runs at import time,
where a mutant tends to break test collection rather than make a test fail.
"""

from __future__ import annotations

import ast
import bisect
import dataclasses
import re
from collections.abc import Iterator, Sequence

OPERATORS = (
    "compare",  # < to <=, == to !=, in to not in, ...
    "boolean",  # and to or, or to and
    "not",  # `not x` to `x`
    "off_by_one",  # range stops, indices, slice bounds, integer bounds in comparisons
    "drop_if",  # an `if` without `else` removed
    "drop_else",  # the `else` / `elif` part of an `if` removed
    "drop_return",  # an early return removed
    "default",  # a default argument value changed
    "swap_args",  # two adjacent positional arguments of a call swapped
)

_COMPARE_FLIPS: dict[type, tuple[str, str]] = {
    # op: (how the operator is written, what it becomes)
    ast.Lt: (r"<(?![=<])", "<="),
    ast.LtE: (r"<=", "<"),
    ast.Gt: (r"(?<![-=>])>(?![=>])", ">="),
    ast.GtE: (r">=", ">"),
    ast.Eq: (r"==", "!="),
    ast.NotEq: (r"!=", "=="),
    ast.In: (r"(?<!\w)(?<!not )in\b", "not in"),
    ast.NotIn: (r"\bnot\s+in\b", "in"),
    ast.Is: (r"\bis\b(?!\s+not\b)", "is not"),
    ast.IsNot: (r"\bis\s+not\b", "is"),
}
_ATOMIC = (ast.Name, ast.Attribute, ast.Call, ast.Subscript)
# A removed block longer than this reads as a missing feature, not a bug.
_MAX_REMOVED_LINES = 8


@dataclasses.dataclass(frozen=True)
class Edit:
    start: int  # byte offsets into the file
    end: int
    text: bytes  # what replaces source[start:end]


@dataclasses.dataclass(frozen=True)
class Mutation:
    path: str  # relative to the repository root, with "/"
    operator: str  # one of OPERATORS
    line: int  # 1-based line of the first edit
    edits: tuple[Edit, ...]

    @property
    def key(self) -> tuple:
        return (self.path, self.operator, self.edits)


def apply_edits(source: bytes, edits: Sequence[Edit]) -> bytes:
    """`source` with non-overlapping edits applied (last first, so offsets stay valid)."""
    out = source
    for edit in sorted(edits, key=lambda e: e.start, reverse=True):
        out = out[: edit.start] + edit.text + out[edit.end :]
    return out


def mutant_source(source: bytes, mutation: Mutation) -> bytes:
    return apply_edits(source, mutation.edits)


class _Spans:
    """Byte offsets of AST positions (col_offset counts UTF-8 bytes)."""

    def __init__(self, source: bytes):
        self.source = source
        self.starts = [0]
        for line in source.splitlines(keepends=True):
            self.starts.append(self.starts[-1] + len(line))

    def at(self, line: int, col: int) -> int:
        return self.starts[line - 1] + col

    def span(self, node: ast.AST) -> tuple[int, int]:
        return self.at(node.lineno, node.col_offset), self.at(node.end_lineno, node.end_col_offset)

    def text(self, node: ast.AST) -> bytes:
        start, end = self.span(node)
        return self.source[start:end]

    def line_text(self, line: int) -> bytes:
        return self.source[self.starts[line - 1] : self.starts[line]]

    def whole_lines(self, node: ast.AST) -> tuple[int, int] | None:
        """The span of the lines `node` fills alone (nothing else before or after it)."""
        start, end = self.span(node)
        first, last = self.starts[node.lineno - 1], self.starts[node.end_lineno]
        before, after = self.source[first:start], self.source[end:last]
        if before.strip() or after.split(b"#")[0].strip():
            return None
        return first, last


def find_mutations(path: str, source: bytes) -> dict[str, list[Mutation]]:
    """Every mutation of one file, by operator, in source order; {} if it does not parse.
    A few may not parse or may not change the program (see changes_the_program)."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return {}
    spans = _Spans(source)
    found: dict[str, list[Mutation]] = {op: [] for op in OPERATORS}
    for operator, edits in _sites(tree, spans):
        line = bisect.bisect_right(spans.starts, edits[0].start)
        mutation = Mutation(path, operator, line, tuple(edits))
        if mutant_source(source, mutation) != source:
            found[operator].append(mutation)
    return {op: sites for op, sites in found.items() if sites}


def changes_the_program(source: bytes, mutant: bytes) -> bool:
    """The mutant parses and means something else (not just other spelling). Checked when a
    mutation is drawn, not for every site: parsing a large module per site takes minutes."""
    try:
        return ast.dump(ast.parse(mutant)) != ast.dump(ast.parse(source))
    except (SyntaxError, ValueError):
        return False


def _function_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Each node inside a function body, once."""
    seen: set[int] = set()
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            for stmt in fn.body:
                for node in ast.walk(stmt):
                    if id(node) not in seen:
                        seen.add(id(node))
                        yield node


def _sites(tree: ast.AST, spans: _Spans) -> Iterator[tuple[str, list[Edit]]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield from _default_sites(node, spans)
            yield from _block_sites(node, spans)
    for node in _function_nodes(tree):
        if isinstance(node, ast.Compare):
            yield from _compare_sites(node, spans)
        elif isinstance(node, ast.BoolOp):
            yield from _boolean_sites(node, spans)
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            start, end = spans.span(node)
            yield "not", [Edit(start, end, spans.text(node.operand))]
        elif isinstance(node, ast.Call):
            yield from _call_sites(node, spans)
        elif isinstance(node, ast.Subscript):
            yield from _subscript_sites(node, spans)


def _single_match(pattern: str, gap: bytes) -> re.Match | None:
    matches = list(re.finditer(pattern.encode(), gap))
    return matches[0] if len(matches) == 1 else None


def _compare_sites(node: ast.Compare, spans: _Spans) -> Iterator[tuple[str, list[Edit]]]:
    left = node.left
    for op, right in zip(node.ops, node.comparators, strict=True):
        gap_start, gap_end = spans.span(left)[1], spans.span(right)[0]
        pattern, new = _COMPARE_FLIPS[type(op)]
        match = _single_match(pattern, spans.source[gap_start:gap_end])
        if match:
            start = gap_start + match.start()
            yield "compare", [Edit(start, gap_start + match.end(), new.encode())]
        for delta in (1, -1):
            if isinstance(right, ast.Constant) or _negative_int(right):
                edit = _shift(right, delta, spans)
                if edit:
                    yield "off_by_one", [edit]
        left = right


def _boolean_sites(node: ast.BoolOp, spans: _Spans) -> Iterator[tuple[str, list[Edit]]]:
    old, new = ("and", b"or") if isinstance(node.op, ast.And) else ("or", b"and")
    edits = []
    for a, b in zip(node.values, node.values[1:], strict=False):
        gap_start, gap_end = spans.span(a)[1], spans.span(b)[0]
        match = _single_match(rf"\b{old}\b", spans.source[gap_start:gap_end])
        if not match:
            return
        edits.append(Edit(gap_start + match.start(), gap_start + match.end(), new))
    yield "boolean", edits


def _negative_int(node: ast.AST) -> bool:
    return isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and _is_int(node.operand)


def _is_int(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and type(node.value) is int


def _shift(node: ast.AST, delta: int, spans: _Spans, names: bool = False) -> Edit | None:
    """`node` plus `delta`, written the way a person would (n - 1 + 1 is just n)."""
    start, end = spans.span(node)
    if _is_int(node):
        return Edit(start, end, str(node.value + delta).encode())
    if _negative_int(node):
        return Edit(start, end, str(-node.operand.value + delta).encode())
    if (
        isinstance(node, ast.BinOp)
        and isinstance(node.op, ast.Add | ast.Sub)
        and _is_int(node.right)
    ):
        value = node.right.value + (delta if isinstance(node.op, ast.Add) else -delta)
        if value == 0:
            return Edit(start, end, spans.text(node.left))
        if value > 0:
            right_start, right_end = spans.span(node.right)
            return Edit(right_start, right_end, str(value).encode())
        return None
    if names and isinstance(node, _ATOMIC):
        sign = b" + 1" if delta > 0 else b" - 1"
        return Edit(start, end, spans.text(node) + sign)
    return None


def _call_sites(node: ast.Call, spans: _Spans) -> Iterator[tuple[str, list[Edit]]]:
    args = node.args
    if isinstance(node.func, ast.Name) and node.func.id == "range" and args:
        stop = args[1] if len(args) >= 2 else args[0]
        if not isinstance(stop, ast.Starred):
            for delta in (1, -1):
                edit = _shift(stop, delta, spans, names=True)
                if edit:
                    yield "off_by_one", [edit]
    if any(isinstance(a, ast.Starred) for a in args):
        return
    for a, b in zip(args, args[1:], strict=False):
        text_a, text_b = spans.text(a), spans.text(b)
        if text_a != text_b and a.lineno == b.end_lineno:  # one line: a one-line diff
            (a_start, a_end), (b_start, b_end) = spans.span(a), spans.span(b)
            yield "swap_args", [Edit(a_start, a_end, text_b), Edit(b_start, b_end, text_a)]


def _subscript_sites(node: ast.Subscript, spans: _Spans) -> Iterator[tuple[str, list[Edit]]]:
    index = node.slice
    if isinstance(index, ast.Slice):
        bounds = [(b, True) for b in (index.lower, index.upper) if b is not None]
    else:
        bounds = [(index, False)]
    for bound, names in bounds:
        for delta in (1, -1):
            edit = _shift(bound, delta, spans, names=names)
            if edit:
                yield "off_by_one", [edit]


def _default_sites(fn: ast.FunctionDef, spans: _Spans) -> Iterator[tuple[str, list[Edit]]]:
    for default in [*fn.args.defaults, *fn.args.kw_defaults]:
        if not isinstance(default, ast.Constant):
            continue
        start, end = spans.span(default)
        if type(default.value) is bool:
            yield "default", [Edit(start, end, str(not default.value).encode())]
        elif type(default.value) is int:
            for delta in (1, -1):
                yield "default", [Edit(start, end, str(default.value + delta).encode())]


def _own_nodes(fn: ast.AST) -> Iterator[ast.AST]:
    """The nodes of `fn`'s body, not those of functions or classes defined in it."""
    stack = list(ast.iter_child_nodes(fn))
    while stack:
        node = stack.pop(0)
        yield node
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            stack.extend(ast.iter_child_nodes(node))


def _statement_lists(fn: ast.AST) -> Iterator[list[ast.stmt]]:
    yield fn.body
    for node in _own_nodes(fn):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            continue
        for field in ("body", "orelse", "finalbody"):
            block = getattr(node, field, None)
            if isinstance(block, list) and block and isinstance(block[0], ast.stmt):
                yield block
        for handler in getattr(node, "handlers", []):
            yield handler.body


def _block_sites(fn: ast.FunctionDef, spans: _Spans) -> Iterator[tuple[str, list[Edit]]]:
    last_top = fn.body[-1]
    for block in _statement_lists(fn):
        for stmt in block:
            if isinstance(stmt, ast.If):
                yield from _if_sites(stmt, len(block), spans)
            elif isinstance(stmt, ast.Return) and stmt is not last_top and block is not fn.body:
                yield _removal("drop_return", stmt, len(block), spans)


def _removal(operator: str, stmt: ast.stmt, siblings: int, spans: _Spans) -> tuple[str, list]:
    lines = spans.whole_lines(stmt)
    if siblings > 1 and lines:
        return operator, [Edit(lines[0], lines[1], b"")]
    start, end = spans.span(stmt)
    return operator, [Edit(start, end, b"pass")]


def _if_sites(node: ast.If, siblings: int, spans: _Spans) -> Iterator[tuple[str, list[Edit]]]:
    if not node.orelse:
        short = node.end_lineno - node.lineno < _MAX_REMOVED_LINES
        if siblings > 1 and short and spans.whole_lines(node):
            yield _removal("drop_if", node, siblings, spans)
        return
    keyword = _else_line(node, spans)
    if keyword is None or node.orelse[-1].end_lineno - keyword >= _MAX_REMOVED_LINES:
        return
    tail = spans.whole_lines(node.orelse[-1])
    if tail is None and not _ends_line(node.orelse[-1], spans):
        return
    end = spans.starts[node.orelse[-1].end_lineno]
    yield "drop_else", [Edit(spans.starts[keyword - 1], end, b"")]


def _ends_line(node: ast.AST, spans: _Spans) -> bool:
    end = spans.span(node)[1]
    rest = spans.source[end : spans.starts[node.end_lineno]]
    return not rest.split(b"#")[0].strip()


def _else_line(node: ast.If, spans: _Spans) -> int | None:
    """The line of the `else:` or `elif` that starts `node`'s orelse, at `node`'s indentation."""
    indent = spans.line_text(node.lineno)[: node.col_offset]
    if indent.strip():
        return None  # the `if` shares its line with other code
    for line in range(node.body[-1].end_lineno + 1, node.orelse[0].lineno + 1):
        text = spans.line_text(line)
        if text.startswith(indent) and re.match(rb"(else\s*:|elif\b)", text[len(indent) :]):
            return line
    return None
