"""A run end to end on the tiny model: RFT, DAPO, evaluations, metrics, plots, checkpoints,
resuming after a crash without losing or repeating an iteration, and curation between stages."""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from swejax import run as runs
from swejax.builder import BuildError, Built
from swejax.config import ConfigError, load_config
from swejax.env.sandbox import bwrap_available
from swejax.models import build_model, preset
from swejax.run import _phases as phases
from swejax.run import open_run, restore_params, train
from swejax.tasks import TaskError, builtin_tasks, select_tasks
from swejax.tokenizer import load_tokenizer

if not bwrap_available():
    if os.environ.get("CI"):
        raise RuntimeError("CI must install bubblewrap (see .ci/run)")
    pytest.skip("bubblewrap is not installed", allow_module_level=True)

TASK = "swejax__a_median_even_length"


def _config(tmp_path, iterations, **overrides):
    base = {
        "name": "t",
        "run_dir": str(tmp_path),
        "tasks.train": TASK,
        "rft.epochs": 3,
        "dapo.iterations": iterations,
        "dapo.group_size": 2,
        "dapo.tasks_per_iteration": 1,
        "dapo.batch_size": 2,
        "eval.runs": 2,
        "rollout.slots": 2,
        "rollout.max_reply_tokens": 48,
        "scaffold.max_turns": 2,
        "dapo.l_thr": 1,
        # The run's mechanics, not the demo's recipe: one demonstration a task, evaluations
        # before and after.
        "rft.detour_turns": 0,
        "eval.every": 0,
    }
    base.update(overrides)
    return load_config(None, [f"{k}={v}" for k, v in base.items()])


def _run(config, mesh=None, model=None):
    """The run of `config` on one device (mesh None), as the train mode opens it."""
    model = model or build_model(preset("tiny", dtype="float32", param_dtype="float32"), seed=0)
    train_tasks, held_out = select_tasks(builtin_tasks(), config.tasks.train, config.tasks.eval)
    return open_run(Built(config, mesh, model, load_tokenizer()), train_tasks, held_out)


def _read(path):
    with open(path) as f:
        return f.read()


def _rows(path, kind):
    with open(os.path.join(path, "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if r["kind"] == kind]


def _kinds(rows, kind):
    return [r for r in rows if kind == r.KIND]


@pytest.mark.slow
def test_a_run_crashed_mid_iteration_resumes_without_loss_or_repeat(tmp_path, monkeypatch):
    ctx = _run(_config(tmp_path, iterations=2))
    real_iteration = phases.dapo_iteration

    def crash_on_second(ctx, index, trainer):
        if index == 1:
            with open(ctx.run.trajectory_file("iter", 1), "w") as f:
                f.write("partial\n")
            raise KeyboardInterrupt("killed")
        return real_iteration(ctx, index, trainer)

    monkeypatch.setattr(phases, "dapo_iteration", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        train(ctx)
    run = ctx.run.path
    assert [r["iteration"] for r in _rows(run, "dapo")] == [0]
    first = os.path.join(run, "trajectories", "iter_00000.jsonl")
    first_bytes = _read(first)

    monkeypatch.setattr(phases, "dapo_iteration", real_iteration)
    resumed = _run(_config(tmp_path, iterations=2))
    metrics = train(resumed)
    assert [r.iteration for r in _kinds(metrics, "dapo")] == [0, 1]
    assert [r.stage for r in _kinds(metrics, "eval")] == ["initial", "rft", "dapo"]
    assert len(_kinds(metrics, "rft")) == 1  # RFT was not redone
    assert _read(first) == first_bytes  # iteration 0 was not redone
    second = _read(os.path.join(run, "trajectories", "iter_00001.jsonl"))
    assert "partial" not in second and len(second.splitlines()) == 2  # G = 2 trajectories
    (row,) = [r for r in _rows(run, "dapo") if r["iteration"] == 1]
    for key in (
        "reward",
        "pass_rate",
        "filtered_fraction",
        "submits",
        "mean_turns",
        "tokens",
        "clip_low",
        "clip_high",
        "entropy",
        "grad_norm",
        "logprob_gap_mean",
        "rollout_s",
        "train_s",
        "idle_fraction",
    ):
        assert key in row, key
    assert row["logprob_gap_max"] < 1e-4  # sampler and trainer agree (float32)
    (evaluation,) = [r for r in _rows(run, "eval") if r["stage"] == "dapo"]
    assert {"pass@1", "pass@1_stderr", "pass@2", "runs"} <= set(evaluation)
    assert runs.row_from_dict(evaluation) == _kinds(metrics, "eval")[-1]
    assert os.path.exists(os.path.join(run, "plots", "training.png"))
    assert os.path.exists(os.path.join(run, "plots", "diagnostics.png"))
    assert "Pass@1 ± stderr" in _read(os.path.join(run, "report.html"))
    # Everything done: running again does nothing new.
    again = train(_run(_config(tmp_path, iterations=2)))
    assert again == metrics
    # The last checkpoint holds the trained weights (what `eval --run` loads).
    fresh = build_model(preset("tiny", dtype="float32", param_dtype="float32"), seed=1)
    restore_params(os.path.join(run, "checkpoints"), fresh)
    import jax
    from flax import nnx

    jax.tree.map(np.testing.assert_array_equal, nnx.state(fresh), nnx.state(resumed.built.model))


def test_a_length_penalty_threshold_past_the_turn_limit_is_refused_at_start(tmp_path):
    with pytest.raises(ConfigError, match=r"dapo.l_thr=3 must be .* scaffold.max_turns=2"):
        _config(tmp_path, iterations=1, **{"dapo.l_thr": 3})


def test_rows_the_ring_cannot_split_are_refused_at_start(tmp_path):
    from swejax.sharding import make_mesh

    config = _config(tmp_path, 1, **{"model.attention": "ring_reference", "train.row_length": 1030})
    model = build_model(preset("tiny", attention="ring_reference"), seed=0)
    with pytest.raises(BuildError, match="multiple of 4"):
        _run(config, make_mesh(fsdp=4, context=2), model)


def test_bad_task_selection_and_rft_source_are_clear_errors(tmp_path):
    with pytest.raises(TaskError, match="unknown tasks: nope"):
        select_tasks(builtin_tasks(), "nope", "")
    ctx = _run(_config(tmp_path, iterations=0, **{"rft.source": "/missing.jsonl", "eval.runs": 0}))
    with pytest.raises(runs.RunError, match="no such trajectories file"):
        train(ctx)


def test_rft_detour_turns_demonstrates_each_task_twice_from_the_command_line(tmp_path):
    from swejax.main import main
    from swejax.rollout import read_trajectories

    argv = [f"--config.run_dir={tmp_path}", "--config.name=d", f"--config.tasks.train={TASK}"]
    argv += ["--config.rft.detour_turns=2", "--config.rft.epochs=1", "--config.eval.runs=0"]
    argv += ["--config.dapo.iterations=0", "--config.scaffold.max_turns=2", "--config.dapo.l_thr=1"]
    assert main(argv) == 0
    direct, detour = read_trajectories(str(tmp_path / "d" / "trajectories" / "rft_00000.jsonl"))
    assert (direct.task_id, direct.group, detour.task_id, detour.group) == (TASK, 0, TASK, 1)
    # Both resolve: the detour's two look-around turns did not count against the agent's 2.
    assert direct.resolved and detour.resolved and detour.num_turns == direct.num_turns + 2
    assert main([*argv, "--config.rft.detour_turns=-1"]) == 2


@pytest.mark.slow
def test_eval_mode_scores_a_run_and_writes_predictions(tmp_path, capsys):
    from swejax.main import main
    from swejax.tasks import VERIFIED_50

    assert len(VERIFIED_50) == len(set(VERIFIED_50)) == 50
    config = [
        f"--config.run_dir={tmp_path}",
        "--config.rollout.slots=2",
        "--config.rollout.max_reply_tokens=24",
        "--config.scaffold.max_turns=2",
        "--config.dapo.l_thr=1",
    ]
    predictions, report = tmp_path / "predictions.jsonl", tmp_path / "report.json"
    # Without --only or --set: the config's evaluation tasks (here its one training task).
    argv = ["eval", "--runs=2", "--temperature=0.7", "--top-k=50", f"--config.tasks.train={TASK}"]
    argv += [f"--predictions={predictions}", f"--report={report}", *config]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "tasks     1, 2 runs each, temperature 0.7" in out and "pass@1    0.000" in out
    (row,) = [json.loads(line) for line in predictions.read_text().splitlines()]
    assert row["instance_id"] == TASK and "model_patch" in row and "model_name_or_path" in row
    assert json.loads(report.read_text())["runs"] == 2
    # Every episode, its report, config and log in the eval folder (no --run: the config's).
    out_folder = tmp_path / "tiny" / "eval"
    episodes = [json.loads(line) for line in (out_folder / "trajectories.jsonl").open()]
    assert [(e["task_id"], e["group"]) for e in episodes] == [(TASK, 0), (TASK, 1)]
    assert json.loads((out_folder / "report.json").read_text()) == json.loads(report.read_text())
    assert json.loads((out_folder / "config.json").read_text())["name"] == "tiny"
    log = (out_folder / "process_0.log").read_text()
    assert "swejax.progress INFO eval: 0/2 episodes" in log
    assert "swejax.progress INFO eval: 2/2 episodes in " in log and "tokens/s" in log
    assert f"show {out_folder / 'trajectories.jsonl'}" in out
    assert main(["eval", "--set=verified-50", *config]) == 2  # not among the built-in tasks
    assert "50 task ids are not in the task source" in capsys.readouterr().err
    assert main(["eval", f"--only={TASK}", f"--run={tmp_path}/none", *config]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert main(["eval", f"--only={TASK}", *config, "--config.dapo.l_thr=2"]) == 2
    assert "dapo.l_thr=2 must be" in capsys.readouterr().err


def _main_job(tmp_path, iterations, kill_at=""):
    """`python -m swejax.main` at a small size in a child process, SIGKILLed at `kill_at`."""
    overrides = {
        "name": "k",
        "run_dir": str(tmp_path),
        "tasks.train": TASK,
        "rft.epochs": 2,
        "dapo.iterations": iterations,
        "dapo.group_size": 2,
        "dapo.tasks_per_iteration": 1,
        "dapo.batch_size": 1,  # two optimizer steps per iteration: a kill can fall between
        "eval.runs": 0,
        "rollout.slots": 1,  # one episode at a time: a kill can fall between them
        "rollout.max_reply_tokens": 24,
        "scaffold.max_turns": 2,
        "dapo.l_thr": 1,
        "rft.detour_turns": 0,
    }
    argv = [sys.executable, "-m", "swejax.main"]
    argv += [f"--config.{k}={v}" for k, v in overrides.items()]
    # The runs of one test share JAX's persistent compilation cache: the programs are the same
    # each time, and what the test checks is the run directory, not the compiler.
    cache = str(tmp_path / "jax-compilation-cache")
    env = dict(os.environ, SWEJAX_KILL_AT=kill_at, JAX_COMPILATION_CACHE_DIR=cache)
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.1"
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_kill_9_at_any_point_loses_no_finished_iteration_and_repeats_none(tmp_path):
    run = tmp_path / "k"
    lines = {}
    # During training (RFT's optimizer steps: DAPO's may all be filtered out at this size),
    # during a checkpoint write, then during a rollout.
    for kill_at, finished in (("rft", 0), ("checkpoint:0", None), ("rollout:1", 1)):
        result = _main_job(tmp_path, iterations=3, kill_at=kill_at)
        assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
        done = [r["iteration"] for r in _rows(run, "dapo")]
        if finished is not None:  # else the checkpoint may or may not have landed
            assert done == list(range(finished)), (kill_at, done)
        assert len(_rows(run, "rft")) == (kill_at != "rft")
        for index in done:  # a finished iteration's trajectories never change afterwards
            text = _read(run / "trajectories" / f"iter_{index:05d}.jsonl")
            assert lines.setdefault(index, text) == text
    result = _main_job(tmp_path, iterations=3)
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = [json.loads(line) for line in _read(run / "metrics.jsonl").splitlines()]
    assert [r["kind"] for r in metrics] == ["rft", "dapo", "dapo", "dapo"]
    assert [r["iteration"] for r in metrics[1:]] == [0, 1, 2]
    for index in range(3):
        text = _read(run / "trajectories" / f"iter_{index:05d}.jsonl")
        assert lines.setdefault(index, text) == text
        assert len(text.splitlines()) == 2  # G = 2, none partial, none twice
    assert "resuming from checkpoint" in result.stderr


@pytest.mark.slow
def test_pi_old_by_recomputation_trains_on_the_recomputed_logprobs(tmp_path, monkeypatch):
    seen = {}
    real_recompute, real_train_on = phases.recomputed_logprobs, phases.train_on

    def recompute(model, trajectories, mesh):
        seen["recomputed"] = real_recompute(model, trajectories, mesh)
        return seen["recomputed"]

    def train_on(ctx, trainer, sequences, *args, **kwargs):
        seen.setdefault("sequences", []).append(sequences)
        return real_train_on(ctx, trainer, sequences, *args, **kwargs)

    real_rollout = phases.rollout

    def rollout(*args, **kwargs):  # rewards that differ within the group: DAPO trains
        trajectories, stats = real_rollout(*args, **kwargs)
        trajectories[0].reward = 1.0 - trajectories[1].reward
        return trajectories, stats

    monkeypatch.setattr(phases, "recomputed_logprobs", recompute)
    monkeypatch.setattr(phases, "train_on", train_on)
    monkeypatch.setattr(phases, "rollout", rollout)
    config = _config(tmp_path, iterations=1, **{"dapo.pi_old": "recompute", "eval.runs": 0})
    metrics = train(_run(config))
    (dapo,) = _kinds(metrics, "dapo")
    assert dapo.optimizer_steps > 0, dapo
    sequences = seen["sequences"][-1]  # the earlier calls: RFT epochs
    assert len(sequences) == len(seen["recomputed"]) > 0
    for sequence, recomputed in zip(sequences, seen["recomputed"], strict=True):
        np.testing.assert_array_equal(np.float32(sequence.old_logprobs), np.float32(recomputed))
    assert 0 <= dapo.logprob_gap_max < 1e-4  # float32: sampler and trainer agree


def _write_attempts(run, attempts):
    from swejax.rollout import Trajectory

    os.makedirs(run / "trajectories")
    with open(run / "trajectories" / "iter_00000.jsonl", "w") as f:
        for task, results in attempts.items():
            for group, resolved in enumerate(results):
                f.write(Trajectory(task, group, resolved=resolved).to_json() + "\n")


def test_curation_between_stages_keeps_tasks_solved_sometimes(tmp_path):
    from swejax.run import curated_tasks

    tasks = builtin_tasks()[:5]
    ids = [t.instance_id for t in tasks]
    attempts = {
        ids[0]: [True, True, False],  # 2/3 solved: too easy
        ids[1]: [False, False, False],  # never solved
        ids[2]: [True, False, False],  # kept
        ids[3]: [False, True, False, False],  # kept
    }  # ids[4] was never attempted: not kept
    _write_attempts(tmp_path / "stage1", attempts)
    record = tmp_path / "pool.json"
    kept = curated_tasks(tasks, str(tmp_path / "stage1"), str(record))
    assert [t.instance_id for t in kept] == [ids[2], ids[3]]
    account = json.loads(record.read_text())
    assert account["never_solved"] == 1 and account["mostly_solved"] == 1
    with pytest.raises(runs.RunError, match="leaves no training task"):
        curated_tasks(tasks[:2], str(tmp_path / "stage1"))
    with pytest.raises(runs.RunError, match="no trajectories directory"):
        curated_tasks(tasks, str(tmp_path / "nowhere"))


@pytest.mark.slow
def test_a_new_stage_starts_from_the_last_runs_weights(tmp_path):
    import jax
    from flax import nnx

    first = _run(_config(tmp_path, iterations=0, **{"eval.runs": 0}))
    train(first)
    overrides = {"name": "second", "rft.source": "", "eval.runs": 0}
    overrides["train.init_from"] = first.run.path
    second = _run(_config(tmp_path, iterations=0, **overrides))
    leaves = jax.tree.leaves(nnx.state(second.built.model))
    trained = jax.tree.leaves(nnx.state(first.built.model))
    assert not all(np.array_equal(a, b) for a, b in zip(leaves, trained, strict=True))
    train(second)
    jax.tree.map(
        np.testing.assert_array_equal, nnx.state(second.built.model), nnx.state(first.built.model)
    )


def _trajectories(path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f]


@pytest.mark.slow
def test_the_rollout_layout_samples_and_trains_as_decoding_over_the_training_layout(tmp_path):
    """The train mode on 8 devices (mesh fsdp=8): decoding from the copy in the rollout layout
    (8 replicas) and over the training state itself give the same episodes, byte for byte, and
    the same training; only the rollout layout copies the weights."""
    from swejax.main import main

    argv = [
        "--config.tasks.train=swejax__b_paginator",
        "--config.rft.epochs=1",
        "--config.dapo.iterations=1",
        "--config.dapo.tasks_per_iteration=1",
        "--config.dapo.group_size=4",
        "--config.dapo.batch_size=2",
        "--config.eval.runs=1",
        "--config.scaffold.max_turns=2",
        "--config.dapo.l_thr=1",
    ]
    for layout in ("rollout", "training"):
        args = [f"--config.run_dir={tmp_path / layout}", f"--config.engine.layout={layout}"]
        assert main(["train", *argv, *args]) == 0
    rollout, training = tmp_path / "rollout" / "tiny", tmp_path / "training" / "tiny"
    files = sorted(os.listdir(rollout / "trajectories"))
    assert files == sorted(os.listdir(training / "trajectories")) and "iter_00000.jsonl" in files
    for name in files:
        assert _read(rollout / "trajectories" / name) == _read(training / "trajectories" / name)
    rows = [
        [json.loads(line) for line in _read(run / "metrics.jsonl").splitlines()]
        for run in (rollout, training)
    ]
    assert [r["kind"] for r in rows[0]] == ["eval", "rft", "eval", "dapo", "eval"]
    for a, b in zip(*rows, strict=True):
        assert b["decode_copy_bytes"] == 0 and a.keys() == b.keys()
        if a["kind"] != "rft":  # RFT from demonstrations decodes nothing
            assert a["decode_copy_bytes"] > 0
        for key in a:
            if key not in ("seconds", "idle_fraction", "decode_copy_bytes") and key[-2:] != "_s":
                np.testing.assert_equal(a[key], b[key], err_msg=key)


@pytest.mark.slow
def test_an_evaluation_with_too_few_pages_preempts_and_draws_the_same_episodes(tmp_path):
    """4 episodes on 4 slots of one replica (tensor=8) whose pool holds one whole sequence:
    episodes wait swapped out instead of ending, and every one is the episode a pool with
    room for all four gives, token for token."""
    from swejax.main import main

    argv = ["eval", f"--only={TASK}", "--runs=4", "--config.mesh.fsdp=1"]
    argv += ["--config.mesh.tensor=8", "--config.engine.num_slots=4"]
    argv += ["--config.scaffold.max_turns=3", "--config.dapo.l_thr=1"]
    reports, episodes = {}, {}
    for pages in (16, 0):  # 16 pages of 64 tokens: one sequence at engine.capacity=1024
        out = tmp_path / f"pages-{pages}"
        args = [f"--config.run_dir={out}", f"--config.engine.num_pages={pages}"]
        assert main([*argv, *args, f"--report={out}.json"]) == 0
        reports[pages] = json.loads((tmp_path / f"pages-{pages}.json").read_text())
        episodes[pages] = _trajectories(out / "tiny" / "eval" / "trajectories.jsonl")
    assert reports[0]["preemptions"] == reports[0]["swapped_tokens"] == 0
    assert reports[16]["preemptions"] > 4 and reports[16]["swapped_tokens"] > 4 * 512
    assert sum(len(e["tokens"]) for e in episodes[16]) > 3 * 1024  # more than the pool holds
    for tight, roomy in zip(episodes[16], episodes[0], strict=True):
        np.testing.assert_allclose(tight.pop("logprobs"), roomy.pop("logprobs"), atol=1e-5)
        assert tight == roomy
        assert tight["end_reason"] == "turn_limit"


@pytest.mark.slow
def test_engine_keys_from_the_command_line_size_and_lay_out_the_engine(tmp_path, capsys):
    """engine.tensor sets the rollout replicas (here 4 of 2 devices: the copy is the weights
    split over tensor=2); engine.memory_gib with num_slots and num_pages of 0 sizes the pool to
    what the memory holds beside the state and the copy, and the slots to it at
    engine.episode_tokens each; bad values are one line each."""
    from swejax.main import main

    argv = ["eval", f"--only={TASK}", "--runs=1", "--config.scaffold.max_turns=1"]
    argv += ["--config.dapo.l_thr=0", "--config.engine.tensor=2"]
    sizes = ["--config.engine.num_slots=0", "--config.engine.num_pages=0"]
    sizes += ["--config.engine.memory_gib=0.01", "--config.engine.episode_tokens=256"]
    report = tmp_path / "report.json"
    assert main([*argv, *sizes, f"--config.run_dir={tmp_path}", f"--report={report}"]) == 0
    copy = json.loads(report.read_text())["decode_copy_bytes"]
    weights = 4 * 336_448  # the tiny model's float32 weights
    assert weights // 2 < copy < weights  # heads, MLP and vocabulary halved; norms whole
    log = (tmp_path / "tiny" / "eval" / "process_0.log").read_text()
    (line,) = [x for x in log.splitlines() if "engine: " in x]
    slots, pages = (int(w) for w in line.split("engine: ")[1].split()[:5:3])
    assert "over 4 replicas of 2 devices (0.01 GiB a device)" in line, line
    # What 0.01 GiB less 10% headroom leaves after the float32 weights at their training
    # sharding (fsdp=8: 42,560 of the 336,448 on a device; an evaluation keeps no optimizer
    # state) and the copy. A slot's sampling buffers: 3 x float32 [vocab / 2]; a 64-token page
    # of 2 layers x 1 KV head x 16 x 4 bytes x k, v: 16 KiB a device; 256 tokens: 4 pages.
    room = int(0.9 * 0.01 * 2**30) - 4 * 42_560 - copy
    per_slot, per_page = 3 * 2048 * 4, 16 * 2**10
    per_replica = (slots // 4, pages // 4)
    assert per_replica[0] == room // (per_slot + 4 * per_page)
    used = per_replica[0] * per_slot + per_replica[1] * per_page
    assert used <= room < used + per_page
    capsys.readouterr()
    assert main([*argv, "--config.engine.tensor=3", f"--config.run_dir={tmp_path}"]) == 2
    assert "engine.tensor=3 does not divide the 8 devices of a host" in capsys.readouterr().err
    assert main([*argv, "--config.engine.num_slots=0", f"--config.run_dir={tmp_path}"]) == 2
    assert "set engine.memory_gib" in capsys.readouterr().err
