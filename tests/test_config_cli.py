"""The config schema, overrides, config files and the command line (no model is built here)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import ml_collections
import pytest

from swejax.config import (
    ConfigError,
    apply_overrides,
    config_to_json,
    default_config,
    load_config,
)
from swejax.main import main

REPO = Path(__file__).resolve().parents[1]
CONFIG_FILES = sorted(p for p in (REPO / "configs").glob("*.py") if not p.name.startswith("_"))


def _write(tmp_path: Path, source: str, name: str = "config.py") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    return str(path)


# --- overrides --------------------------------------------------------------------------------


def test_overrides_parse_by_the_type_of_the_field():
    config = load_config(
        None, ["seed=7", "mesh.fsdp=-1", "mesh.tensor=2", "name=run-a", "model.dtype=bfloat16"]
    )
    assert config.seed == 7 and isinstance(config.seed, int)
    assert config.mesh.tensor == 2
    assert config.name == "run-a"
    assert config.model.dtype == "bfloat16"
    assert default_config().seed == 0  # the default is built afresh, not changed in place


@pytest.mark.parametrize(
    ("text", "expected"),
    [("true", True), ("False", False), ("1", True), ("0", False)],
)
def test_bool_override_accepts_words_and_digits(text, expected):
    config = ml_collections.ConfigDict({"train": {"shuffle": not expected}})
    assert apply_overrides(config, [f"train.shuffle={text}"]).train.shuffle is expected


def test_float_and_tuple_overrides():
    config = ml_collections.ConfigDict({"lr": 1.0, "betas": (0.9, 0.99), "sizes": [1, 2]})
    changed = apply_overrides(config, ["lr=3e-4", "betas=(0.8, 0.95)", "sizes=[4, 5, 6]"])
    assert changed.lr == pytest.approx(3e-4) and isinstance(changed.lr, float)
    assert changed.betas == (0.8, 0.95) and isinstance(changed.betas, tuple)
    assert list(changed.sizes) == [4, 5, 6]
    assert config.lr == 1.0  # the input config is left alone


def test_later_override_of_the_same_key_wins():
    assert load_config(None, ["seed=1", "seed=2"]).seed == 2


@pytest.mark.parametrize(
    ("override", "must_name"),
    [
        ("mesh.fsdp=abc", ["'mesh.fsdp'", "int", "'abc'"]),
        ("seed=1.5", ["'seed'", "int", "'1.5'"]),
    ],
)
def test_wrong_type_names_key_expected_type_and_value(override, must_name):
    with pytest.raises(ConfigError) as caught:
        load_config(None, [override])
    for text in must_name:
        assert text in str(caught.value)


def test_wrong_bool_and_tuple_values():
    config = ml_collections.ConfigDict({"flag": True, "shape": (1, 2)})
    with pytest.raises(ConfigError, match="'flag'.*bool.*'yes please'"):
        apply_overrides(config, ["flag=yes please"])
    with pytest.raises(ConfigError, match="'shape'.*tuple.*'3'"):
        apply_overrides(config, ["shape=3"])


def test_unknown_top_level_key_suggests_the_closest():
    with pytest.raises(ConfigError) as caught:
        load_config(None, ["sed=3"])
    message = str(caught.value)
    assert "'sed'" in message and "did you mean 'seed'" in message
    assert "run_dir" in message  # the valid keys at that level are listed
    assert "\n" not in message


def test_unknown_nested_key_lists_keys_of_its_section():
    with pytest.raises(ConfigError) as caught:
        load_config(None, ["model.dtyp=bfloat16"])
    message = str(caught.value)
    assert "'model.dtyp'" in message and "did you mean 'dtype'" in message
    assert "param_dtype" in message and "fsdp" not in message  # model's keys, not mesh's


def test_override_without_value_or_of_a_section_is_an_error():
    with pytest.raises(ConfigError, match="a.b.c=value"):
        load_config(None, ["seed"])
    with pytest.raises(ConfigError, match="'mesh' is a section"):
        load_config(None, ["mesh=3"])
    with pytest.raises(ConfigError, match="'seed' is a value"):
        load_config(None, ["seed.x=3"])


def test_bad_dtype_is_rejected():
    with pytest.raises(ConfigError, match="'model.dtype'.*float32, bfloat16.*'float16'"):
        load_config(None, ["model.dtype=float16"])


def test_loaded_config_is_locked_against_new_keys():
    config = load_config(None, [])
    with pytest.raises(AttributeError):
        config.model.dtpye = "bfloat16"


def test_config_to_json_round_trips_values():
    import json

    config = load_config(None, ["mesh.tensor=2"])
    decoded = json.loads(config_to_json(config))
    assert decoded["mesh"]["tensor"] == 2 and decoded["model"]["preset"] == "tiny"


# --- config files -----------------------------------------------------------------------------


def test_config_file_then_overrides(tmp_path):
    path = _write(
        tmp_path,
        """
        from swejax.config import default_config

        def get_config():
            config = default_config()
            config.name = "from-file"
            config.mesh.tensor = 2
            return config
        """,
    )
    config = load_config(path, ["mesh.tensor=4"])
    assert config.name == "from-file" and config.mesh.tensor == 4


def test_missing_config_file_is_named(tmp_path):
    missing = str(tmp_path / "nope.py")
    with pytest.raises(ConfigError, match="nope.py does not exist"):
        load_config(missing, [])


def test_config_file_without_get_config(tmp_path):
    path = _write(tmp_path, "x = 1\n")
    with pytest.raises(ConfigError, match=f"{path} does not define get_config"):
        load_config(path, [])


def test_config_file_whose_get_config_raises(tmp_path):
    path = _write(tmp_path, "def get_config():\n    raise RuntimeError('boom')\n")
    with pytest.raises(ConfigError, match=f"{path}.*RuntimeError: boom"):
        load_config(path, [])


def test_config_file_that_does_not_parse(tmp_path):
    path = _write(tmp_path, "def get_config(:\n")
    with pytest.raises(ConfigError, match=f"{path} failed to run: SyntaxError"):
        load_config(path, [])


def test_config_file_adding_a_key_is_rejected(tmp_path):
    path = _write(
        tmp_path,
        """
        from swejax.config import default_config

        def get_config():
            config = default_config()
            config.model.presett = "qwen2.5-7b"
            return config
        """,
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path, [])
    message = str(caught.value)
    assert path in message and "'model.presett'" in message and "'preset'" in message


def test_config_file_with_a_wrong_type_or_missing_key(tmp_path):
    wrong_type = _write(
        tmp_path,
        """
        import ml_collections
        from swejax.config import default_config

        def get_config():
            config = default_config()
            config.mesh = ml_collections.ConfigDict(
                {"data": 1, "fsdp": "all", "tensor": 1, "context": 1}
            )
            return config
        """,
        name="wrong_type.py",
    )
    with pytest.raises(ConfigError, match="wrong_type.py sets 'mesh.fsdp' to 'all'; expected int"):
        load_config(wrong_type, [])
    missing = _write(
        tmp_path,
        """
        import ml_collections

        def get_config():
            return ml_collections.ConfigDict({"name": "x"})
        """,
        name="missing.py",
    )
    with pytest.raises(ConfigError, match="missing.py lacks .*seed"):
        load_config(missing, [])


def test_config_file_with_bad_dtype(tmp_path):
    path = _write(
        tmp_path,
        """
        from swejax.config import default_config

        def get_config():
            config = default_config()
            config.model.param_dtype = "fp8"
            return config
        """,
    )
    with pytest.raises(ConfigError, match="'model.param_dtype'.*'fp8'"):
        load_config(path, [])


def test_the_shipped_config_files_exist():
    names = {path.name for path in CONFIG_FILES}
    assert {"tiny.py", "qwen25_0p5b.py", "qwen25_7b_1gpu.py"} <= names
    assert {"qwen25_72b_rft.py", "qwen25_72b_stage1.py", "qwen25_72b_stage2.py"} <= names


def test_the_paper_configs_hold_every_spec_number():
    rft = load_config(str(REPO / "configs" / "qwen25_72b_rft.py"), [])
    assert (rft.rft.learning_rate, rft.rft.weight_decay, rft.rft.warmup_steps) == (5e-6, 0.1, 10)
    assert (rft.rft.batch_size, rft.rft.epochs, rft.rollout.capacity) == (64, 1, 65_536)
    assert (rft.rft.source, rft.rft.attempts, rft.rft.mask_format_errors) == ("policy", 10, True)
    one = load_config(str(REPO / "configs" / "qwen25_72b_stage1.py"), [])
    two = load_config(str(REPO / "configs" / "qwen25_72b_stage2.py"), [])
    for stage, (context, tasks, batch, eps_high, turns) in [
        (one, (65_536, 300, 128, 0.3, 40)),
        (two, (131_072, 100, 256, 0.26, 80)),
    ]:
        d = stage.dapo
        assert stage.rollout.capacity == context and stage.scaffold.max_turns == turns
        assert (d.tasks_per_iteration, d.batch_size, d.eps_low, d.eps_high) == (
            tasks,
            batch,
            0.2,
            eps_high,
        )
        assert (d.group_size, d.learning_rate, d.weight_decay, d.l_thr) == (10, 1e-6, 0.1, 10)
        assert stage.rollout.temperature == 1.0 and stage.train.grad_clip == 1.0
        assert stage.model.preset == "qwen2.5-72b" and stage.eval.runs == 10
        # The meshes tools/plan_memory.py fits on 16 x 8 H200 (README, "Memory planning").
        assert stage.model.attention == "ring" and stage.mesh.tensor == 8
        assert stage.mesh.context == context // 32_768


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda path: path.name)
def test_every_config_file_loads_and_documents_its_command(path):
    config = load_config(str(path), [])
    assert config.name == path.stem
    docstring = path.read_text().split('"""')[1]
    assert "python -m swejax.main" in docstring and path.name in docstring


def test_shipped_config_values():
    tiny = load_config(str(REPO / "configs" / "tiny.py"), [])
    assert tiny.to_dict() == {**default_config().to_dict(), "name": "tiny"}
    small = load_config(str(REPO / "configs" / "qwen25_0p5b.py"), [])
    assert (small.model.preset, small.model.dtype) == ("qwen2.5-0.5b", "bfloat16")
    big = load_config(str(REPO / "configs" / "qwen25_7b_1gpu.py"), [])
    assert big.model.preset == "qwen2.5-7b"
    assert (big.model.dtype, big.model.param_dtype, big.model.remat) == (
        "bfloat16",
        "bfloat16",
        "full",
    )
    assert big.mesh.to_dict() == {"data": 1, "fsdp": -1, "tensor": 1, "context": 1}


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


@pytest.mark.slow
def test_the_main_job_end_to_end_at_a_reduced_size(tmp_path, capsys):
    """The default job (train) on conftest's 8 fake devices (fsdp=8), shrunk for CI."""
    argv = [
        f"--config.run_dir={tmp_path}",
        "--config.tasks.train=swejax__a_median_even_length",
        "--config.rft.epochs=2",
        "--config.dapo.iterations=1",
        "--config.dapo.group_size=2",
        "--config.dapo.tasks_per_iteration=1",
        "--config.eval.runs=1",
        "--config.rollout.slots=2",
        "--config.rollout.max_reply_tokens=32",
        "--config.scaffold.max_turns=2",
        "--config.dapo.l_thr=1",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "eval initial" in out and "rft            trained on 1 of 1" in out
    assert "iteration 0" in out and "eval it 1" in out
    run = tmp_path / "tiny"
    assert (run / "metrics.jsonl").exists() and (run / "trajectories" / "iter_00000.jsonl").exists()
    assert (run / "plots" / "pass_at_k.png").exists()


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
