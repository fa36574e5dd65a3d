"""The typed config: sections, overrides, config files, moved keys, and the shipped configs."""

from __future__ import annotations

import textwrap
from pathlib import Path

import ml_collections
import pytest

from swejax.config import (
    MOVED_KEYS,
    Config,
    ConfigError,
    apply_overrides,
    base_config,
    config_to_json,
    default_config,
    load_config,
    to_dict,
)

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


def test_loaded_config_is_frozen():
    config = load_config(None, [])
    with pytest.raises(AttributeError):
        config.model.dtpye = "bfloat16"
    with pytest.raises(AttributeError):
        config.model.dtype = "bfloat16"


def test_config_to_json_round_trips_values():
    import json

    config = load_config(None, ["mesh.tensor=2"])
    decoded = json.loads(config_to_json(config))
    assert decoded["mesh"]["tensor"] == 2 and decoded["model"]["preset"] == "tiny"
    assert decoded == to_dict(config) and "stop_tokens" not in decoded["engine"]
    assert "slots" not in decoded["rollout"]  # the moved names are aliases, not keys


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
    assert (rft.rft.batch_size, rft.rft.epochs, rft.engine.capacity) == (64, 1, 65_536)
    assert (rft.rft.source, rft.rft.attempts, rft.rft.mask_format_errors) == ("policy", 10, True)
    one = load_config(str(REPO / "configs" / "qwen25_72b_stage1.py"), [])
    two = load_config(str(REPO / "configs" / "qwen25_72b_stage2.py"), [])
    for stage, (context, tasks, batch, eps_high, turns) in [
        (one, (65_536, 300, 128, 0.3, 40)),
        (two, (131_072, 100, 256, 0.26, 80)),
    ]:
        d = stage.dapo
        assert stage.engine.capacity == context and stage.scaffold.max_turns == turns
        assert (d.tasks_per_iteration, d.batch_size, d.eps_low, d.eps_high) == (
            tasks,
            batch,
            0.2,
            eps_high,
        )
        assert (d.group_size, d.learning_rate, d.weight_decay, d.l_thr) == (10, 1e-6, 0.1, 10)
        assert stage.rollout.temperature == 1.0 and stage.optimizer.grad_clip == 1.0
        assert (stage.optimizer.b1, stage.optimizer.b2, stage.optimizer.eps) == (0.9, 0.999, 1e-8)
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
    assert tiny == load_config(None, [])  # the embedded default, spelled out as a file
    small = load_config(str(REPO / "configs" / "qwen25_0p5b.py"), [])
    assert (small.model.preset, small.model.dtype) == ("qwen2.5-0.5b", "bfloat16")
    big = load_config(str(REPO / "configs" / "qwen25_7b_1gpu.py"), [])
    assert big.model.preset == "qwen2.5-7b"
    assert (big.model.dtype, big.model.param_dtype, big.model.remat) == (
        "bfloat16",
        "bfloat16",
        "full",
    )
    assert big.mesh.shape() == {"data": 1, "fsdp": -1, "tensor": 1, "context": 1}


# --- sections ---------------------------------------------------------------------------------


def test_every_section_default_is_the_papers_where_it_gives_one():
    paper = Config()
    assert paper.model.preset == "qwen2.5-72b" and paper.tasks.runtime == "docker"
    assert (paper.scaffold.max_turns, paper.scaffold.window) == (40, 100)
    assert (paper.rft.learning_rate, paper.rft.weight_decay, paper.rft.warmup_steps) == (
        5e-6,
        0.1,
        10,
    )
    assert (paper.rft.batch_size, paper.rft.epochs, paper.rft.attempts) == (64, 1, 10)
    d = paper.dapo
    assert (d.eps_low, d.eps_high, d.learning_rate, d.weight_decay) == (0.2, 0.3, 1e-6, 0.1)
    assert (d.tasks_per_iteration, d.group_size, d.batch_size, d.l_thr) == (300, 10, 128, 10)
    assert paper.rollout.temperature == 1.0 and paper.engine.capacity == 65_536
    assert paper.optimizer.grad_clip == 1.0 and paper.eval.runs == 10
    assert load_config(None, []).rft.learning_rate == 1e-2  # the demo's, not a default


def test_the_demo_is_base_config_plus_its_own_values():
    demo, base = to_dict(load_config(None, [])), to_dict(Config())
    changed = {
        f"{section}.{key}"
        for section, values in demo.items()
        if isinstance(values, dict)
        for key, value in values.items()
        if base[section][key] != value
    }
    assert {"model.preset", "engine.num_slots", "rft.learning_rate", "dapo.l_thr"} <= changed
    assert "dapo.eps_high" not in changed and "optimizer.b2" not in changed


@pytest.mark.parametrize(("old", "new"), sorted(MOVED_KEYS.items()))
def test_moved_keys_still_work_on_the_command_line(old, new):
    section, leaf = new.split(".")
    value = 0.5 if new == "optimizer.grad_clip" else 3
    config = load_config(None, [f"{old}={value}"])
    assert getattr(getattr(config, section), leaf) == value
    assert load_config(None, [f"{new}={value}"]) == config


def test_moved_keys_still_work_in_config_files(tmp_path):
    path = _write(
        tmp_path,
        """
        from swejax.config import default_config

        def get_config():
            config = default_config()
            config.rollout.slots = 5
            config.rollout.capacity = config.rollout.capacity * 2
            config.train.grad_clip = 0.25
            return config
        """,
    )
    config = load_config(path, [])
    assert (config.engine.num_slots, config.engine.capacity) == (5, 2048)
    assert config.optimizer.grad_clip == 0.25


def test_a_section_refuses_a_bad_value_naming_its_key():
    with pytest.raises(
        ConfigError, match=r"^config key 'engine.num_slots' must be at least 0, got -1$"
    ):
        load_config(None, ["engine.num_slots=-1"])
    with pytest.raises(
        ConfigError, match=r"^config key 'engine.layout' must be one of rollout, training, "
    ):
        load_config(None, ["engine.layout=pod"])
    with pytest.raises(ConfigError, match="mesh axis sizes must be positive or -1"):
        load_config(None, ["mesh.tensor=0"])
    with pytest.raises(ConfigError, match="at most one mesh axis may be -1"):
        load_config(None, ["mesh.tensor=-1"])
    with pytest.raises(ConfigError, match="'tasks.runtime' must be one of bwrap, docker"):
        load_config(None, ["tasks.runtime=podman"])
    with pytest.raises(ConfigError, match="'model.attention' must be one of reference"):
        load_config(None, ["model.attention=fast"])
    with pytest.raises(ConfigError, match="'model.remat' must be one of none"):
        load_config(None, ["model.remat=some"])
    with pytest.raises(ConfigError, match="'dapo.pi_old' must be one of sampler, recompute"):
        load_config(None, ["dapo.pi_old=never"])


def test_checks_across_sections():
    with pytest.raises(ConfigError, match=r"dapo.l_thr=4 must be .* scaffold.max_turns=4"):
        load_config(None, ["dapo.l_thr=4", "scaffold.max_turns=4"])
    with pytest.raises(ConfigError, match="rollout.temperature must be positive for DAPO"):
        load_config(None, ["rollout.temperature=0"])
    assert load_config(None, ["rollout.temperature=0", "dapo.iterations=0"]).dapo.iterations == 0


def test_base_config_holds_every_key_of_every_section():
    tree = base_config()
    for section, values in to_dict(Config()).items():
        if isinstance(values, dict):
            assert set(values) <= set(tree[section])
    assert default_config().name == "tiny"


# Every key of the schema before the typed sections (users' commands and scripts set them).
EARLIER_KEYS = [
    "name",
    "seed",
    "run_dir",
    "tokenizer",
    "model.preset",
    "model.checkpoint",
    "model.dtype",
    "model.param_dtype",
    "model.remat",
    "model.attention",
    "mesh.data",
    "mesh.fsdp",
    "mesh.tensor",
    "mesh.context",
    "tasks.source",
    "tasks.train",
    "tasks.eval",
    "tasks.runtime",
    "tasks.curate_from",
    "scaffold.max_turns",
    "scaffold.window",
    "scaffold.max_observation_chars",
    "scaffold.command_timeout",
    "scaffold.prompts",
    "rollout.slots",
    "rollout.capacity",
    "rollout.page_size",
    "rollout.num_pages",
    "rollout.max_reply_tokens",
    "rollout.steps_per_call",
    "rollout.workers",
    "rollout.temperature",
    "rft.source",
    "rft.attempts",
    "rft.epochs",
    "rft.batch_size",
    "rft.learning_rate",
    "rft.warmup_steps",
    "rft.weight_decay",
    "rft.mask_format_errors",
    "dapo.iterations",
    "dapo.tasks_per_iteration",
    "dapo.group_size",
    "dapo.batch_size",
    "dapo.eps_low",
    "dapo.eps_high",
    "dapo.learning_rate",
    "dapo.weight_decay",
    "dapo.l_thr",
    "dapo.pi_old",
    "train.row_length",
    "train.micro_batches",
    "train.grad_clip",
    "train.checkpoint_keep",
    "train.init_from",
    "eval.every",
    "eval.runs",
    "eval.temperature",
]


@pytest.mark.parametrize("key", EARLIER_KEYS)
def test_every_earlier_key_still_sets_its_value(key):
    tree = default_config()
    section, _, leaf = key.rpartition(".")
    current = (tree[section] if section else tree)[leaf]
    config = load_config(None, [f"{key}={current}"])  # its own value, through the parser
    new = MOVED_KEYS.get(key, key)
    new_section, _, new_leaf = new.rpartition(".")
    value = getattr(getattr(config, new_section) if new_section else config, new_leaf)
    assert value == current, key
