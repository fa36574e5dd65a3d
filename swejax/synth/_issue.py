"""Issue text for a synthesized bug, written as a user would report it.

A user sees a call and what came back, not the code behind it. So the text is built from the
failing test's frame of pytest's report only (its arguments, its lines up to the failing one, the
exception), never from the frames inside the package, and any line that quotes a changed line of
the source is left out.
"""

from __future__ import annotations

import ast
import dataclasses
import random
import re
import textwrap
from collections.abc import Iterable, Sequence

from swejax.synth._layout import is_test_file

# A frame's location: after its source in pytest's long form ("tests/test_x.py:12: TypeError"),
# before it in the short form ("pkg/mod.py:30: in helper"); "<frozen codecs>:239: in encode".
_LOCATION = re.compile(r"^(<[^>]+>|[^\s:]+):\d+:(?: in (\S+))?")
_SEPARATOR = re.compile(r"^(_ )+_?$")
_ARGUMENTS = re.compile(r"^[A-Za-z_]\w* = ")  # "word = 'fish', count = 2"
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")  # reprs of functions and objects: differ per run
_MAX_SNIPPET_LINES = 12
_MAX_ERROR_LINES = 8
_MAX_REPR = 80
_WRAPPERS = {"list", "tuple", "set", "dict", "sorted", "len", "str", "repr", "next", "iter"}


@dataclasses.dataclass(frozen=True)
class Symptom:
    """What one failing test shows, read from its frame of pytest's report."""

    test: str  # node id (never shown: a user does not know the tests)
    snippet: tuple[str, ...]  # the test's arguments and lines, up to the failing statement
    error: tuple[str, ...]  # the exception and pytest's explanation, e.g. "assert 'a' == 'b'"
    call: str = ""  # the call that misbehaved, its arguments filled in ("" if not found)
    actual: str = ""  # the repr it returned
    expected: str = ""  # the repr the test wanted

    @property
    def kind(self) -> str:
        """The exception's name: AssertionError for a wrong value."""
        first = self.error[0] if self.error else ""
        if _assertion(first) is not None:
            return "AssertionError"
        return first.split(":")[0].strip() or "an error"


def _assertion(line: str) -> str | None:
    """What pytest says a failed `assert` compared ("'a' == 'b'"), or None for another error.
    pytest writes it with or without the exception's name in front."""
    line = line.removeprefix("AssertionError: ")
    return line[len("assert ") :] if line.startswith("assert ") else None


def scrub(text: str) -> str:
    return _ADDRESS.sub("", text)


def symptom(test: str, report_text: str) -> Symptom:
    """A Symptom from a JUnit failure's message and traceback text (as _suite reads them)."""
    lines = scrub(report_text).splitlines()
    test_file = test.split("::")[0]
    in_tests = [f for path, f in _frames(lines) if path == test_file or is_test_file(path)]
    frame = next((f for f in reversed(in_tests) if any(x.startswith(">") for x in f)), [])
    # E lines: the exception and pytest's explanation of it, from the innermost frame.
    error = textwrap.dedent("\n".join(line[1:] for line in lines if line.startswith("E "))).strip()
    error = error.splitlines()
    arguments, code, statement = _frame_code(frame)
    snippet = _trimmed([*code, *statement], _MAX_SNIPPET_LINES - len(arguments))
    if not error:  # no E lines: the message is all there is
        error = [line for line in lines[:_MAX_ERROR_LINES] if line.strip()][:1]
    call, actual, expected = _wrong_value(arguments, statement, error)
    snippet = [*arguments, *snippet]
    return Symptom(test, tuple(snippet), tuple(error[:_MAX_ERROR_LINES]), call, actual, expected)


def _frames(lines: Sequence[str]) -> list[tuple[str, list[str]]]:
    """(file, lines) of each frame of a pytest traceback, innermost last."""
    frames: list[tuple[str, list[str]]] = []
    block: list[str] = []
    short = ""  # the file of a short-form frame whose source lines come next
    for line in lines:
        location = None if line.startswith("E ") else _LOCATION.match(line)
        if location or _SEPARATOR.match(line):
            if short:
                frames.append((short, block))
            elif location and not location.group(2):
                frames.append((location.group(1), block))
            block, short = [], ""
            if location and location.group(2):
                short = location.group(1)
            continue
        block.append(line)
    if short:
        frames.append((short, block))
    return frames


def _trimmed(lines: list[str], keep: int) -> list[str]:
    """The last `keep` lines (at least the failing statement's), dedented again."""
    if len(lines) <= keep:
        return lines
    return ["# ...", *textwrap.dedent("\n".join(lines[-max(keep, 1) :])).splitlines()]


def _frame_code(frame: Sequence[str]) -> tuple[list[str], list[str], list[str]]:
    """(argument assignments, body lines before the failing statement, the statement)."""
    arguments: list[str] = []
    source: list[str] = []
    marked = None
    for line in frame:
        if line.startswith("E ") or (marked is not None and not line.strip()):
            if marked is not None:
                break
            continue
        if not source and _ARGUMENTS.match(line):  # the test's arguments, before its source
            arguments += _split_arguments(line)
            continue
        if line.startswith(">"):
            marked = len(source)
        # pytest indents a frame's source by four columns, the failing line behind a ">".
        source.append(line[4:] if line.startswith((">", "    ")) else line)
    if marked is None:
        return arguments, [], []
    start = next((i + 1 for i, s in enumerate(source) if s.lstrip().startswith("def ")), 0)
    body = textwrap.dedent("\n".join(source[start:])).splitlines()
    cut = marked - start
    return arguments, [b for b in body[:cut] if b.strip()], body[cut:]


def _split_arguments(line: str) -> list[str]:
    """`a = 1, b = 'x, y'` as assignments; [] when the reprs are not Python."""
    source = "f(" + re.sub(r"(?:^|(?<=, ))([A-Za-z_]\w*) = ", r"\1=", line) + ")"
    try:
        keywords = ast.parse(source).body[0].value.keywords
    except (SyntaxError, ValueError):  # ValueError: a null byte in a repr
        return []
    return [f"{k.arg} = {ast.get_source_segment(source, k.value)}" for k in keywords]


def _wrong_value(arguments: list[str], statement: list[str], error: list[str]):
    """(call, actual, expected) from the failing statement, for `assert X == CALL(...)`,
    `self.assertEqual`, `assertTrue`, `assertFalse` and `assertRaises`; for any other statement
    that raised, its first call that is not an assertion helper. ("", "", "") if unknown."""
    source = "\n".join(statement).strip()
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):  # ValueError: a null byte in a repr
        return "", "", ""
    if not tree.body or not error:
        return "", "", ""
    node, values = tree.body[0], dict(a.split(" = ", 1) for a in arguments)
    shown = _assertion(error[0])  # pytest: "a == b"
    message = error[0].removeprefix("AssertionError: ")  # unittest: "a != b", "x is not true"
    raised = shown is None and not error[0].startswith("AssertionError")
    compared = _compared(node)
    if compared is not None:
        left, right, separator = compared
        has_call = [_has_call(left), _has_call(right)]
        if has_call.count(True) == 1:
            call, other = (right, left) if has_call[1] else (left, right)
            expected = _filled(source, other, values)
            if raised:
                return _filled(source, call, values), "", expected
            text = shown if separator == " == " else message
            if text is not None and text.count(separator) == 1 and "\n" not in text:
                first, second = text.split(separator)
                actual, expected = (second, first) if has_call[1] else (first, second)
                return _filled(source, call, values), actual, expected
    truth = _helper(node, ("assertTrue", "assertFalse"))
    if truth is not None and truth.args and _has_call(truth.args[0]) and not raised:
        expected = "True" if truth.func.attr == "assertTrue" else "False"
        actual = re.sub(r" is not (true|false)$", "", message)
        return _filled(source, truth.args[0], values), actual, expected
    raises = _helper(node, ("assertRaises",))
    if raises is not None and len(raises.args) >= 2:
        call = _filled(source, raises.args[1], values)
        rest = ", ".join(_filled(source, a, values) for a in raises.args[2:])
        return f"{call}({rest})", "", ""
    if raised:
        first = next((n for n in ast.walk(node) if _is_plain_call(n)), None)
        if first is not None:
            return _filled(source, first, values), "", ""
    return "", "", ""


def _compared(node: ast.AST) -> tuple[ast.AST, ast.AST, str] | None:
    """(left, right, how the failure message separates them) of an equality the test checks."""
    test = node.test if isinstance(node, ast.Assert) else None
    if isinstance(test, ast.Compare) and [type(op) for op in test.ops] == [ast.Eq]:
        return test.left, test.comparators[0], " == "
    equal = _helper(node, ("assertEqual", "assertEquals"))
    if equal is not None and len(equal.args) >= 2:
        return equal.args[0], equal.args[1], " != "
    return None


def _helper(node: ast.AST, names: tuple[str, ...]) -> ast.Call | None:
    """The call if `node` is `self.NAME(...)` for one of `names` (unittest's assertions)."""
    if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
        func = node.value.func
        if isinstance(func, ast.Attribute) and func.attr in names:
            return node.value
    return None


def _is_plain_call(node: ast.AST) -> bool:
    """A call a user of the package would make: not the test's own helpers (assertions,
    `self.*`, `test*`), and not a wrapper around the real call (`list(...)`, `"".join(...)`)."""
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    owner = func.value if isinstance(func, ast.Attribute) else None
    wrapper = name in _WRAPPERS or (name == "join" and isinstance(owner, ast.Constant))
    helper = name.startswith(("assert", "test", "_test")) or name == "raises"
    return not (wrapper or helper or (isinstance(owner, ast.Name) and owner.id == "self"))


def _has_call(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Call) for n in ast.walk(node))


def _filled(source: str, node: ast.AST, values: dict[str, str]) -> str:
    """The source of `node` with the test's arguments written in as their values."""
    text = ast.get_source_segment(source, node) or ""
    try:
        inner = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError):  # ValueError: a null byte in a repr
        return text
    names = [n for n in ast.walk(inner) if isinstance(n, ast.Name) and n.id in values]
    lines = text.splitlines(keepends=True)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))
    for name in sorted(names, key=lambda n: (n.lineno, n.col_offset), reverse=True):
        start = offsets[name.lineno - 1] + name.col_offset
        end = offsets[name.end_lineno - 1] + name.end_col_offset
        text = text[:start] + values[name.id] + text[end:]
    return " ".join(text.split())


def _short(value: str) -> str:
    return value if len(value) <= _MAX_REPR else value[: _MAX_REPR - 3] + "..."


def _function(call: str) -> str:
    """The called function's name, looking through wrappers: list(f(x)) is about f."""
    try:
        node = ast.parse(call, mode="eval").body
    except (SyntaxError, ValueError):
        return call.split("(")[0]
    while isinstance(node, ast.Call) and not _is_plain_call(node):
        inner = next((a for a in node.args if isinstance(a, ast.Call)), None)
        if inner is None:
            break
        node = inner
    target = node.func if isinstance(node, ast.Call) else node
    return ast.get_source_segment(call, target) or call.split("(")[0]


def _title(s: Symptom, package: str) -> str:
    if s.call and s.actual:
        return f"`{_function(s.call)}` returns {_short(s.actual)} instead of {_short(s.expected)}"
    if s.call and s.kind != "AssertionError":
        return f"`{_function(s.call)}` raises {s.kind}"
    if s.call:
        return f"Wrong behaviour of `{_function(s.call)}`"
    return f"Unexpected {s.kind} from {package}"


def _code(lines: Iterable[str], language: str = "") -> str:
    lines = list(lines)
    return f"```{language}\n" + "\n".join(lines) + "\n```" if lines else ""


def _describe(s: Symptom) -> str:
    if s.call and s.actual:
        return f"`{s.call}` returns `{_short(s.actual)}`, but it should return `{s.expected}`."
    if s.call and s.kind != "AssertionError":
        wanted = f" `{_short(s.expected)}`" if s.expected else " a result"
        return f"`{s.call}` raises {s.kind}; I expected it to return{wanted}."
    return "The code below fails."


def _template_plain(package: str, symptoms: Sequence[Symptom]) -> str:
    first = symptoms[0]
    parts = [_title(first, package), "", f"{_describe(first)} This is with {package}.", ""]
    parts += ["To reproduce:", "", _code(first.snippet, "python"), ""]
    parts += ["What I get:", "", _code(first.error)]
    for other in symptoms[1:]:
        parts += ["", "It is not the only case:", "", _code(other.snippet, "python"), ""]
        parts += [_code(other.error)]
    return "\n".join(parts)


def _template_sections(package: str, symptoms: Sequence[Symptom]) -> str:
    first = symptoms[0]
    parts = [_title(first, package), "", "### Describe the bug", "", _describe(first), ""]
    parts += ["### Steps to reproduce", ""]
    for s in symptoms:
        parts += [_code(s.snippet, "python"), ""]
    parts += ["### Actual behaviour", "", _code(first.error), ""]
    expected = f"`{first.expected}`" if first.expected else "no error"
    parts += ["### Expected behaviour", "", f"The code above should give {expected}.", ""]
    parts += ["### Environment", "", f"- {package}", "- Python 3"]
    return "\n".join(parts)


def _template_short(package: str, symptoms: Sequence[Symptom]) -> str:
    first = symptoms[0]
    parts = [_title(first, package), ""]
    parts += [f"{_describe(first)} ({package})", "", _code(first.snippet, "python"), ""]
    parts += ["gives", "", _code(first.error)]
    if len(symptoms) > 1:
        parts += ["", "Same problem here:", "", _code(symptoms[1].snippet, "python")]
    return "\n".join(parts)


def _template_story(package: str, symptoms: Sequence[Symptom]) -> str:
    first = symptoms[0]
    parts = [_title(first, package), ""]
    parts += [f"I ran into this with {package}. Here is a small example:", ""]
    parts += [_code(first.snippet, "python"), "", "It stops with", "", _code(first.error), ""]
    if first.call and first.expected:
        parts += [f"I expected `{first.call}` to give `{first.expected}`."]
    else:
        parts += ["I expected it to run without an error."]
    if len(symptoms) > 1:
        parts += ["", "Another input that shows it:", "", _code(symptoms[1].snippet, "python")]
    return "\n".join(parts)


TEMPLATES = (_template_plain, _template_sections, _template_short, _template_story)


def pick_symptoms(symptoms: Sequence[Symptom], rng: random.Random, count: int = 2) -> list:
    """Up to `count` symptoms from different test functions, preferring ones with a known call."""
    by_function: dict[str, list[Symptom]] = {}
    for s in sorted(symptoms, key=lambda s: s.test):
        by_function.setdefault(s.test.split("[")[0], []).append(s)
    groups = [by_function[f] for f in sorted(by_function)]
    rng.shuffle(groups)
    # Those that show the test's code and the call first; stable: the shuffle breaks ties.
    groups.sort(key=lambda g: (not any(s.snippet for s in g), not any(s.call for s in g)))
    return [rng.choice(g) for g in groups[:count]]


def problem_statement(
    package: str, symptoms: Sequence[Symptom], rng: random.Random, forbidden: Iterable[str] = ()
) -> str:
    """The issue text, in a template drawn from `rng`; lines quoting `forbidden` are dropped."""
    template = rng.choice(TEMPLATES)
    text = template(package, symptoms)
    banned = [f for f in forbidden if f]
    lines = [line for line in text.splitlines() if not any(b in line for b in banned)]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"
