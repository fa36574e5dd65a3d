"""Many processes (JAX multi-controller) on this machine: 2 processes x 4 fake CPU devices
joined over localhost with gloo, launched the way users launch them (tools/launch_local.py
and `--config.distributed.*`), against the same work in 1 process x 8 devices."""

from __future__ import annotations

import glob
import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from swejax.env.sandbox import bwrap_available

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = sys.executable


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(devices: int) -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return env


def _main(*args: str, devices: int = 4, **popen) -> subprocess.Popen:
    return subprocess.Popen(
        [PYTHON, "-m", "swejax.main", *args],
        cwd=ROOT,
        env=_env(devices),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def _distributed(port: int, process: int, processes: int = 2) -> list[str]:
    return [
        f"--config.distributed.coordinator=127.0.0.1:{port}",
        f"--config.distributed.num_processes={processes}",
        f"--config.distributed.process_id={process}",
    ]


def test_an_unreachable_coordinator_is_one_line_naming_it_after_a_bounded_wait(tmp_path):
    port = _free_port()
    started = time.monotonic()
    child = _main(
        "validate-tasks",
        "--only=swejax__b_roman_repeat",
        *_distributed(port, 1),
        "--config.distributed.timeout_s=3",
    )
    _, stderr = child.communicate(timeout=120)
    assert child.returncode == 2, stderr[-2000:]
    errors = [line for line in stderr.splitlines() if "error" in line]
    assert errors == [errors[0]] and f"127.0.0.1:{port}" in errors[0], stderr[-2000:]
    assert "within 3 s" in errors[0]
    assert time.monotonic() - started < 60


def test_processes_with_different_configs_stop_naming_the_first_differing_key():
    port = _free_port()
    children = [
        _main("check", *_distributed(port, i), f"--config.seed={i}", "--config.model.preset=tiny")
        for i in (0, 1)
    ]
    outputs = [child.communicate(timeout=240) for child in children]
    for child, (_, stderr) in zip(children, outputs, strict=True):
        assert child.returncode == 2, stderr[-2000:]
        assert "the processes' configs differ: seed is 0 on process 0 and 1 on process 1" in stderr


@pytest.mark.skipif(not bwrap_available(), reason="bubblewrap is not installed")
def test_validate_tasks_on_2_processes_splits_the_tasks_and_writes_one_report(tmp_path):
    """Each process grades its share of the tasks in its own sandboxes; process 0 writes the
    report, the one 1 process writes."""
    tasks = ["swejax__b_roman_repeat", "swejax__b_paginator", "swejax__b_mdtable_empty"]
    only = [f"--only={t}" for t in tasks]
    one = _main("validate-tasks", *only, f"--report={tmp_path / 'one.json'}", devices=8)
    assert one.wait(timeout=300) == 0, one.stderr.read()[-2000:]
    port = _free_port()
    pod = [
        _main("validate-tasks", *only, f"--report={tmp_path / 'pod.json'}", *_distributed(port, i))
        for i in (0, 1)
    ]
    outputs = [child.communicate(timeout=300) for child in pod]
    for child, (_, stderr) in zip(pod, outputs, strict=True):
        assert child.returncode == 0, stderr[-2000:]
    assert "3 of 3 tasks valid" in outputs[0][0], outputs
    assert "tasks valid" not in outputs[1][0]  # process 0 reports

    def rows(name):
        report = json.loads((tmp_path / name).read_text())
        return [{k: v for k, v in row.items() if k != "seconds"} for row in report["tasks"]]

    assert rows("pod.json") == rows("one.json")
    assert sorted(r["instance_id"] for r in rows("pod.json")) == sorted(tasks)


def _two_processes(script: str, *args: str) -> None:
    """Run tests/pods/SCRIPT as 2 processes x 4 devices; both must succeed."""
    port, path = _free_port(), os.path.join(ROOT, "tests", "pods", script)
    children = [
        subprocess.Popen(
            [PYTHON, path, f"127.0.0.1:{port}", str(i), *args],
            cwd=ROOT,
            env=dict(_env(4), PYTHONPATH=ROOT),
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in (0, 1)
    ]
    for child in children:
        _, stderr = child.communicate(timeout=300)
        assert child.returncode == 0, stderr[-3000:]


@pytest.mark.slow
def test_engine_rounds_on_2_processes_equal_one_process_in_either_layout(tmp_path):
    """Over the training layout each process feeds and samples only its own slots, and takes
    part in every call even in rounds where it has nothing ready. Over the rollout layout each
    process decodes alone on its own 4 devices (no collective across processes in its compiled
    decode, where the training layout's gathers the fsdp-split weights across them). Either
    way its slots sample what they do in one process."""
    import jax
    from flax import nnx
    from pods.engine_rounds import build_engine, schedule

    _two_processes("engine_rounds.py", str(tmp_path))
    parts = [json.loads((tmp_path / f"process_{i}.json").read_text()) for i in (0, 1)]
    assert [p["local_slots"] for p in parts] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    engine = build_engine()  # 1 process x 8 devices, every slot its own
    weights = sum(leaf.nbytes for leaf in jax.tree.leaves(nnx.state(engine.model)))
    reference = schedule(engine)
    assert len(reference[0]) == 12 and len(reference[4]) == 6
    assert parts[0]["sampled"] == {"0": reference[0]}
    assert parts[1]["sampled"] == {"4": reference[4]}
    for i, part in enumerate(parts):
        rollout = part["rollout"]
        assert rollout["processes"] == [i] and rollout["me"] == i
        assert rollout["copied"] and not rollout["collective"]
        assert rollout["sampled"] == part["sampled"]
        moved = rollout["bytes"]
        assert moved["per_call_across_hosts"] == moved["per_step_across_hosts"] == 0, moved
        gathered = part["training_bytes"]
        print(f"\nprocess {i}: decode collectives, training layout {gathered}, rollout {moved}")
        # The weights split over fsdp=8 are gathered over both processes for every decode
        # call (the CPU compiler hoists the gathers out of the step loop; a TPU's gathers
        # them every step), and the loop's "any slot still active" is an all-reduce over both.
        assert gathered["per_call_across_hosts"] > 0.9 * weights, (gathered, weights)
        assert gathered["per_step_across_hosts"] > 0


@pytest.mark.slow
def test_checkpoints_load_each_block_once_per_process_and_move_between_process_counts(
    tmp_path, monkeypatch
):
    """A multi-file HF checkpoint loaded by 2 processes: each reads only its own devices'
    blocks, each once, and together exactly what 1 process reads. HF and orbax saves from 2
    processes hold the weights 1 process wrote, and orbax moves 1 x 8 -> 2 x 4 -> 1 x 8."""
    import jax
    from flax import nnx
    from pods.checkpoints import MESH, SHARD_BYTES
    from safetensors.numpy import load_file

    from swejax.models import ReadLog, build_model, hf_io, load_hf_checkpoint, preset
    from swejax.run.checkpoints import load_checkpoint, save_checkpoint
    from swejax.sharding import make_mesh

    mesh = make_mesh(**MESH)
    model = build_model(preset("tiny", dtype="float32", param_dtype="float32"), mesh, seed=3)
    monkeypatch.setattr(hf_io, "_SHARD_BYTES", SHARD_BYTES)  # files and an index
    files = hf_io.save_hf_checkpoint(model, str(tmp_path / "hf"))
    assert len(files) >= 2
    save_checkpoint(model, str(tmp_path / "orbax_one"))
    one = ReadLog()
    load_hf_checkpoint(str(tmp_path / "hf"), mesh=mesh, read_log=one)

    _two_processes("checkpoints.py", str(tmp_path))

    parts = [json.loads((tmp_path / f"process_{i}.json").read_text()) for i in (0, 1)]
    blocks = [{(name, tuple(map(tuple, b))): n for name, b, n in p["blocks"]} for p in parts]
    for p, mine in zip(parts, blocks, strict=True):
        assert p["bytes_read"] == sum(mine.values()), "a block was read twice"
        assert mine.keys() <= one.blocks.keys()
        assert p["bytes_read"] < 0.6 * one.bytes_read, (p["bytes_read"], one.bytes_read)
        assert p["orbax_one_equals_hf"]
    assert blocks[0].keys() | blocks[1].keys() == one.blocks.keys()
    shared = sum(one.blocks[k] for k in blocks[0].keys() & blocks[1].keys())
    print(
        f"\nHF load, bytes read: 1 process {one.bytes_read}; 2 processes "
        f"{parts[0]['bytes_read']} + {parts[1]['bytes_read']} ({shared} replicated, read by both)"
    )

    # The HF export from 2 processes: the same files, tensors and index as from 1.
    assert sorted(os.listdir(tmp_path / "hf_pod")) == sorted(os.listdir(tmp_path / "hf"))
    for path in files:
        mine, theirs = load_file(path), load_file(tmp_path / "hf_pod" / os.path.basename(path))
        assert mine.keys() == theirs.keys()
        for name in mine:
            assert np.array_equal(mine[name], theirs[name]), name
    index = "model.safetensors.index.json"
    assert (tmp_path / "hf_pod" / index).read_text() == (tmp_path / "hf" / index).read_text()

    # The orbax save from 2 processes, restored by 1 at another sharding.
    back = load_checkpoint(str(tmp_path / "orbax_pod"), mesh=make_mesh(fsdp=8))
    for a, b in zip(
        jax.tree.leaves(nnx.state(model)), jax.tree.leaves(nnx.state(back)), strict=True
    ):
        assert np.array_equal(np.asarray(a), np.asarray(b))


# The demo (the main job), cut to a minute: two tasks (each demonstrated straight and the long
# way), RFT's optimizer steps, one DAPO iteration that trains in two steps, three evaluations.
# Four turns rather than the demo's three: then a random model's episodes end at the turn limit
# or with the context full, so rewards differ within a group (in three turns every one ends at
# the limit, and DAPO has nothing to train on).
REDUCED = [
    "--config.tasks.train=swejax__b_mdtable_empty,swejax__b_paginator",
    "--config.scaffold.max_turns=4",
    "--config.dapo.l_thr=3",
    "--config.rft.epochs=2",
    "--config.dapo.iterations=1",
    "--config.dapo.tasks_per_iteration=2",
    "--config.dapo.group_size=4",
    "--config.dapo.batch_size=2",  # optimizer steps of 2 trajectories: a kill falls between
    "--config.eval.runs=1",
    "--config.distributed.timeout_s=60",  # a lost peer is noticed within 30 s
]
TIMING = {"seconds", "idle_fraction"}


def _phase_trajectories(run) -> dict[str, list[dict]]:
    """phase file -> its trajectories from every process's file."""
    phases: dict[str, list[dict]] = {}
    for path in sorted(glob.glob(os.path.join(run, "trajectories", "*.jsonl"))):
        phase = os.path.basename(path).split(".")[0]
        with open(path) as f:
            phases.setdefault(phase, []).extend(json.loads(line) for line in f)
    return phases


def _metrics(run) -> list[dict]:
    with open(os.path.join(run, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return [{k: v for k, v in r.items() if k not in TIMING and not k.endswith("_s")} for r in rows]


def _final_params(run):
    from flax import nnx

    from swejax.models import build_model, preset
    from swejax.run import restore_params

    model = build_model(preset("tiny", dtype="float32", param_dtype="float32"), seed=1)
    restore_params(os.path.join(run, "checkpoints"), model)
    return nnx.to_pure_dict(nnx.state(model))


def _one_process(run_dir, cache, kill_at="") -> subprocess.CompletedProcess:
    """The reduced main job as `python -m swejax.main` on 8 devices (runs of one test share a
    compilation cache: what is checked is the run, not the compiler)."""
    env = dict(_env(8), JAX_COMPILATION_CACHE_DIR=str(cache), SWEJAX_KILL_AT=kill_at)
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.1"
    argv = [PYTHON, "-m", "swejax.main", f"--config.run_dir={run_dir}", *REDUCED]
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


def _pod(logs, cache, *args: str, kill_at="") -> subprocess.CompletedProcess:
    """`python -m swejax.main ARGS` with the reduced job's config on 2 processes x 4 devices,
    launched by tools/launch_local.py."""
    argv = [PYTHON, os.path.join(ROOT, "tools", "launch_local.py"), "--processes=2"]
    argv += ["--devices=4", f"--log-dir={logs}", "--grace=150", "--"]
    argv += [PYTHON, "-m", "swejax.main", *args, *REDUCED]
    env = dict(os.environ, SWEJAX_KILL_AT=kill_at, JAX_COMPILATION_CACHE_DIR=str(cache))
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.1"
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


def _same_episodes(one: dict, two: dict) -> None:
    """The same episodes and tokens; log-probabilities to float rounding."""
    assert sorted(one) == sorted(two)
    for phase in one:
        key = lambda t: (t["task_id"], t["group"])  # noqa: E731
        a, b = sorted(one[phase], key=key), sorted(two[phase], key=key)
        assert [key(t) for t in a] == [key(t) for t in b], phase
        for x, y in zip(a, b, strict=True):
            np.testing.assert_allclose(x.pop("logprobs"), y.pop("logprobs"), atol=1e-5)
            assert x == y, (phase, key(x))


def _same_metrics(one: list[dict], two: list[dict]) -> None:
    """The same rows; floats to float rounding (a relative 1e-5)."""
    assert [r["kind"] for r in one] == [r["kind"] for r in two]
    for a, b in zip(one, two, strict=True):
        assert a.keys() == b.keys()
        for k in a:
            if isinstance(a[k], float):
                np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6, err_msg=k)
            else:
                assert a[k] == b[k], k


def _stopped_on_its_own(launch: subprocess.CompletedProcess, logs) -> float:
    """Process 1 was killed: process 0 stopped non-zero, by itself (not killed by the launcher),
    naming process 1. Returns the seconds it took."""
    assert launch.returncode != 0
    assert "process 1 exited with -9" in launch.stderr, launch.stderr[-3000:]
    assert "killing process 0" not in launch.stderr, "process 0 had to be killed: it hung"
    (line,) = [x for x in launch.stderr.splitlines() if "process 0: exit" in x]
    assert "process 0: exit 3" in line, launch.stderr[-3000:]  # the watchdog's, not JAX's abort
    survivor = (logs / "process_0.out").read_text()
    assert "swejax: error: process 1 stopped answering" in survivor, survivor[-3000:]
    return float(line.split(", ")[1].split(" s after")[0])


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The reduced main job, uninterrupted, on 1 process x 8 devices; and the compilation cache
    the other 1-process runs share."""
    root = tmp_path_factory.mktemp("reference")
    cache = root / "jax-compilation-cache"
    first = _one_process(root, cache)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "eval initial" in first.stdout and "rft            trained on 4 of 4" in first.stdout
    assert "iteration 0" in first.stdout and "eval it 1" in first.stdout
    run = root / "tiny"
    assert (run / "plots" / "training.png").exists() and (run / "report.html").exists()
    names = sorted(os.listdir(run / "trajectories"))
    assert names == [f"eval_0000{i}.jsonl" for i in range(3)] + [
        "iter_00000.jsonl",
        "rft_00000.jsonl",
    ]
    rows = _metrics(run)
    assert [r["kind"] for r in rows] == ["eval", "rft", "eval", "dapo", "eval"]
    assert rows[3]["optimizer_steps"] > 1, "the DAPO iteration must train, in several steps"
    return run, cache


@pytest.mark.slow
@pytest.mark.skipif(not bwrap_available(), reason="bubblewrap is not installed")
def test_the_main_job_on_2x4_processes_equals_1x8(reference, tmp_path):
    first, cache = reference
    pod = _pod(tmp_path / "logs", cache, "train", f"--config.run_dir={tmp_path / 'pod'}")
    assert pod.returncode == 0, pod.stderr[-3000:]
    assert "eval it 1" in pod.stdout  # process 0's summary
    pod_run = tmp_path / "pod" / "tiny"
    assert sorted(os.listdir(pod_run / "logs")) == ["process_0.log", "process_1.log"]

    # 2 x 4: every episode's tokens; log-probabilities, metrics and weights to float rounding
    # (each process packs its own rows of a batch, so sums run in another order).
    pod_files = sorted(os.listdir(pod_run / "trajectories"))
    assert "iter_00000.process_1.jsonl" in pod_files, pod_files
    _same_episodes(_phase_trajectories(first), _phase_trajectories(pod_run))
    _same_metrics(_metrics(first), _metrics(pod_run))
    import jax

    worst = max(
        float(np.abs(np.asarray(x) - np.asarray(y)).max())
        for x, y in zip(
            jax.tree.leaves(_final_params(first)),
            jax.tree.leaves(_final_params(pod_run)),
            strict=True,
        )
    )
    print(f"\nlargest parameter difference, 2 x 4 against 1 x 8: {worst:.2e}")
    assert worst < 1e-5

    # `eval` on 2 processes draws as a run's first evaluation: on the same (initial) weights,
    # the reference run's first evaluation, episode for episode, and one predictions file.
    out = [f"--report={tmp_path / 'eval.json'}", f"--predictions={tmp_path / 'eval.jsonl'}"]
    done = _pod(tmp_path / "eval-logs", cache, "eval", *out, f"--config.run_dir={tmp_path}")
    assert done.returncode == 0, done.stderr[-3000:]
    evaluated = _phase_trajectories(first)["eval_00000"]
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["trajectories"] == len(evaluated) and report["tasks"] == 2
    assert report["tokens"] == sum(len(t["tokens"]) for t in evaluated)
    np.testing.assert_allclose(report["reward"], np.mean([t["reward"] for t in evaluated]))
    predictions = [json.loads(line) for line in (tmp_path / "eval.jsonl").read_text().splitlines()]
    firsts = [(t["task_id"], t["submission"]) for t in evaluated if t["group"] == 0]
    assert [(p["instance_id"], p["model_patch"]) for p in predictions] == firsts


@pytest.mark.slow
@pytest.mark.skipif(not bwrap_available(), reason="bubblewrap is not installed")
def test_kills_on_1_and_2_processes_resume_across_process_counts_losing_nothing(
    reference, tmp_path
):
    """1 process x 8 killed mid-rollout, having repeated the reference run byte for byte until
    then. Resumed on 2 processes x 4 from its checkpoint, where
    process 1 is killed mid-rollout, then (resumed again) between DAPO's optimizer steps; each
    time process 0 stops on its own, naming it, in bounded time. Resumed on 1 process x 8, the
    run ends with the uninterrupted run's episodes and metrics: no iteration lost or repeated,
    each resume dropping the partial files of the process count before it."""
    first, cache = reference
    run_dir, run = f"--config.run_dir={tmp_path}", tmp_path / "tiny"
    killed = _one_process(tmp_path, cache, kill_at="rollout:0")
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert "iter_00000.jsonl" in os.listdir(run / "trajectories")
    # Up to the kill it is the reference's command again: the same files, byte for byte (the
    # evaluations before and after RFT, RFT's trajectories), and the same metrics.
    for name in ("eval_00000.jsonl", "rft_00000.jsonl", "eval_00001.jsonl"):
        assert (run / "trajectories" / name).read_bytes() == (
            first / "trajectories" / name
        ).read_bytes(), name
    assert json.dumps(_metrics(run)) == json.dumps(_metrics(first)[:3])

    for kill_at in ("rollout:0@1", "train:0@1"):
        started, logs = time.monotonic(), tmp_path / f"pod-logs-{kill_at}"
        killed = _pod(logs, cache, "train", run_dir, kill_at=kill_at)
        seconds = _stopped_on_its_own(killed, logs)
        print(f"\nkilled at {kill_at}: process 0 stopped {seconds:.1f} s after process 1")
        assert seconds < 120 and time.monotonic() - started < 600
        assert "resuming from checkpoint 1" in (logs / "process_0.out").read_text()
        files = sorted(n for n in os.listdir(run / "trajectories") if n.startswith("iter_"))
        assert "iter_00000.process_1.jsonl" in files and "iter_00000.jsonl" not in files, files

    resumed = _one_process(tmp_path, cache)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from checkpoint 1" in resumed.stderr, resumed.stderr[-3000:]
    after = sorted(os.listdir(run / "trajectories"))
    assert [n for n in after if n.startswith("iter_")] == ["iter_00000.jsonl"], after
    _same_episodes(_phase_trajectories(first), _phase_trajectories(run))
    _same_metrics(_metrics(first), _metrics(run))
