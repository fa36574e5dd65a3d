"""The command line: modes, options, one-line errors, and the modes that build a model."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from swejax.main import main

REPO = Path(__file__).resolve().parents[1]


# --- the command line -------------------------------------------------------------------------


def _one_error_line(captured) -> str:
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("swejax: error: ")
    assert "Traceback" not in captured.err
    return lines[0]


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_lists_every_mode_and_the_config_flags(flag, capsys):
    assert main([flag]) == 0
    out = capsys.readouterr().out
    for mode in ("train", "check", "convert", "eval", "validate-tasks"):
        assert f"\n  {mode} " in out
    assert "--config=FILE" in out and "--config.KEY=VALUE" in out


def test_mode_help_lists_its_options(capsys):
    assert main(["check", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--batch-size" in out and "--seq-len" in out and "--config.KEY=VALUE" in out
    assert main(["convert", "-h"]) == 0
    out = capsys.readouterr().out
    assert "--from-hf" in out and "--to-hf" in out


def test_unknown_mode_suggests_the_closest(capsys):
    assert main(["chek"]) == 2
    line = _one_error_line(capsys.readouterr())
    assert "unknown mode 'chek'" in line and "did you mean 'check'" in line


def test_config_file_given_as_a_mode(capsys):
    assert main(["configs/tiny.py"]) == 2
    assert "--config=configs/tiny.py" in _one_error_line(capsys.readouterr())


@pytest.mark.parametrize(
    ("argv", "must_say"),
    [
        (["check", "--bogus"], "unrecognized argument '--bogus'"),
        (["check", "--config.seed"], "--config.seed needs a value"),
        (["check", "--seq-len=0"], "positive integer"),
        (["--config.seed=1", "check"], "the mode goes first"),
        (["check", "--config"], "--config"),
    ],
)
def test_bad_arguments_are_one_line_errors(argv, must_say, capsys):
    assert main(argv) == 2
    assert must_say in _one_error_line(capsys.readouterr())


@pytest.mark.parametrize(
    ("argv", "must_say"),
    [
        (["check", "--config.mesh.fsdp=abc"], "'mesh.fsdp' expects an int, got 'abc'"),
        (["check", "--config.modle.dtype=bfloat16"], "did you mean 'model'"),
        (["--config=/nonexistent/config.py"], "/nonexistent/config.py does not exist"),
    ],
)
def test_config_errors_from_the_command_line(argv, must_say, capsys):
    assert main(argv) == 2
    assert must_say in _one_error_line(capsys.readouterr())


@pytest.mark.parametrize(
    ("argv", "must_say"),
    [
        (["convert"], "convert needs a direction"),
        (["convert", "--from-hf", "a", "--to-hf", "b"], "one direction, not both"),
        (["convert", "--from-hf", "a"], "needs both --from-hf DIR and --to DIR"),
        (["convert", "--to-hf", "b"], "needs both --from DIR and --to-hf DIR"),
    ],
)
def test_convert_needs_exactly_one_direction(argv, must_say, capsys):
    assert main(argv) == 2
    assert must_say in _one_error_line(capsys.readouterr())


def test_convert_refuses_to_write_over_a_directory_with_files(tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")
    argv = ["convert", "--from-hf", str(tmp_path / "in"), "--to", str(tmp_path / "out")]
    assert main(argv) == 2
    assert "is not an empty directory" in _one_error_line(capsys.readouterr())


def test_bad_mesh_from_the_command_line_is_one_line_naming_devices_and_shape():
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
        "JAX_PLATFORMS": "cpu",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    result = subprocess.run(
        [sys.executable, "-m", "swejax.main", "--config.mesh.data=3"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("swejax: error:")]
    assert len(errors) == 1, result.stderr
    assert "8 devices" in errors[0] and "data=3" in errors[0]
    assert result.stdout == ""


# --- modes that build a model (the tiny preset, on conftest's 8 fake devices) -----------------


def _summary(out: str) -> dict[str, str]:
    return dict(line.split(maxsplit=1) for line in out.strip().splitlines())


@pytest.mark.slow
def test_check_builds_the_model_and_runs_a_forward_pass(capsys):
    from swejax import models

    argv = ["check", "--config.mesh.tensor=2", "--batch-size=4", "--seq-len=16"]
    assert main(argv) == 0
    summary = _summary(capsys.readouterr().out)
    assert summary["mesh"] == "data=1, fsdp=4, tensor=2, context=1"
    assert summary["model"] == "preset tiny"
    tiny = models.preset("tiny")
    assert summary["params"] == f"{models.count_params(tiny):,}"
    assert summary["logits"] == f"(4, 16, {tiny.vocab_size}) float32"


def test_check_with_an_unknown_preset_is_one_line(capsys):
    assert main(["check", "--config.model.preset=qwen2.5-1b"]) == 2
    assert "unknown model preset 'qwen2.5-1b'" in _one_error_line(capsys.readouterr())


@pytest.mark.slow
def test_convert_round_trip_keeps_the_weights(tmp_path, capsys):
    from swejax import models

    hf_in, ours, hf_out = (str(tmp_path / name) for name in ("hf_in", "swejax", "hf_out"))
    from swejax.tokenizer import load_tokenizer

    model = models.build_model(models.preset("tiny"), None, seed=1)
    models.save_hf_checkpoint(model, hf_in, tokenizer=load_tokenizer())

    assert main(["convert", "--from-hf", hf_in, "--to", ours]) == 0
    assert f"wrote {ours}:" in capsys.readouterr().out
    assert main(["convert", "--from", ours, "--to-hf", hf_out]) == 0
    written = capsys.readouterr().out
    assert f"wrote {hf_out}: 5 files" in written and "model.safetensors" in written
    # The tokenizer travels with the weights both ways.
    assert len(load_tokenizer(hf_out)) == len(load_tokenizer())

    before = (tmp_path / "hf_in" / "model.safetensors").read_bytes()
    assert (tmp_path / "hf_out" / "model.safetensors").read_bytes() == before


def test_convert_from_a_directory_that_is_not_a_checkpoint(tmp_path, capsys):
    argv = ["convert", "--from", str(tmp_path), "--to-hf", str(tmp_path / "out")]
    assert main(argv) == 2
    assert "cannot read swejax checkpoint" in _one_error_line(capsys.readouterr())


@pytest.mark.slow
def test_check_refuses_a_tokenizer_larger_than_the_vocabulary(tmp_path, capsys):
    from swejax.models import build_model, preset, save_hf_checkpoint

    save_hf_checkpoint(build_model(preset("tiny", vocab_size=160)), str(tmp_path))
    code = main(
        [
            "check",
            f"--config.model.checkpoint={tmp_path}",
            "--config.mesh.fsdp=1",
            "--config.mesh.data=-1",
        ]
    )
    line = _one_error_line(capsys.readouterr())
    assert code == 2
    assert "2803 tokens" in line and "vocabulary is 160" in line


def test_the_main_job_without_bubblewrap_says_how_to_install_it(monkeypatch, capsys):
    import swejax.env.sandbox

    monkeypatch.setattr(swejax.env.sandbox, "bwrap_available", lambda: False)
    assert main([]) == 2
    line = _one_error_line(capsys.readouterr())
    assert "apt-get install bubblewrap" in line and "tools/setup.sh --main" in line


def test_validate_tasks_takes_its_source_and_runtime_from_the_config(tmp_path, capsys):
    import json

    report = tmp_path / "report.json"
    task = "swejax__b_roman_repeat"
    args = ["validate-tasks", f"--only={task}", f"--report={report}"]
    assert main([*args, "--config.tasks.runtime=bwrap"]) == 0
    assert "1 of 1 tasks valid" in capsys.readouterr().out
    assert json.loads(report.read_text())["runtime"] == "bwrap"
    missing = tmp_path / "none.jsonl"
    assert main([*args, f"--config.tasks.source={missing}"]) == 2
    assert "cannot load tasks" in _one_error_line(capsys.readouterr())
