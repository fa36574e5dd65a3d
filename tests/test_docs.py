"""The docs stay true: the README's commands are the ones that run, its Python runs, its status
names every mode, and every link in the docs points at a file of the repository."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from swejax.main import _MODES

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
DOCS = sorted((REPO / "docs").glob("*.md"))


def _blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.DOTALL)


def _setup_commands() -> list[str]:
    (block,) = [b for b in _blocks(README, "bash") if "tools/setup.sh" in b][:1]
    return [line for line in block.splitlines() if line and not line.startswith("#")]


def test_the_readme_has_the_two_set_up_commands_and_ci_runs_the_second():
    main_job, tests = _setup_commands()
    assert main_job == "bash tools/setup.sh --main && .venv/bin/python -m swejax.main"
    ci = (REPO / ".ci" / "run").read_text()
    assert tests in ci.splitlines(), "CI runs the README's test command verbatim"


def test_the_status_line_names_every_mode_and_calls_none_unbuilt():
    status = next(p for p in README.split("\n\n") if p.startswith("**Status.**"))
    assert f"All {len(_MODES)} modes work" in status.replace("five", "5")
    for mode in _MODES:
        assert f"`{mode}`" in status, mode
    assert "not built" not in status.lower()


def test_the_readme_python_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # the snippets name configs/ by relative path
    namespace: dict = {}
    for block in _blocks(README, "python"):
        exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102


@pytest.mark.parametrize("path", [REPO / "README.md", *DOCS], ids=lambda p: p.name)
def test_every_relative_link_points_at_a_file(path):
    text = path.read_text()
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if "://" in target:
            continue
        assert (path.parent / target).exists(), f"{path.name} links to missing {target}"


def test_nothing_in_the_repository_cites_a_file_outside_it():
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    outside = re.compile(r"\b(SPEC|DESIGN|STYLE)\.md\b|\.\./shared")
    for name in tracked:
        path = REPO / name
        if path.suffix in (".py", ".md", ".sh", ".toml", ".txt") and path.is_file():
            assert not outside.search(path.read_text(errors="replace")), name


def test_the_sharding_table_is_the_code_s():
    from swejax.sharding import LOGICAL_RULES

    text = (REPO / "docs" / "architecture.md").read_text()
    section = text.split("## Sharding", 1)[1].split("\n## ", 1)[0]
    documented = {}
    for names, axes in re.findall(r"^\| (`.*?) \| (`.*?`) \|$", section, flags=re.MULTILINE):
        for name in re.findall(r"`(\w+)`", names):
            documented[name] = tuple(re.findall(r"`(\w+)`", axes))
    assert documented == LOGICAL_RULES
