"""Scripted policies drive real episodes through the scaffold on the built-in tasks."""

import dataclasses
import os

import pytest

from swejax.env import SandboxError
from swejax.env.grading import grade
from swejax.env.sandbox import bwrap_available
from swejax.env.scaffold import (
    EndReason,
    EpisodeEnded,
    ScaffoldConfig,
    open_episode,
    patch_commands,
    quote_heredocs,
    render,
    truncate_middle,
)
from swejax.rollout import EpisodeEnv, ScriptedPolicy, run_episode
from swejax.tasks import builtin_tasks
from swejax.tokenizer import load_tokenizer

if not bwrap_available():
    if os.environ.get("CI"):
        raise RuntimeError("CI must install bubblewrap (see .ci/run)")
    pytest.skip("bubblewrap is not installed", allow_module_level=True)

TASKS = builtin_tasks()
BY_ID = {task.instance_id: task for task in TASKS}
TOKENIZER = load_tokenizer()


def reply(command: str, thought: str = "Next step.") -> str:
    return f"{thought}\n```command\n{command}\n```"


def play(task, replies, config=None):
    """The episode loop driven by a policy that sends `replies` in order, whatever it observes,
    graded and scored as a rollout is (L_thr = 10 or below the turn limit): (trajectory, ended
    episode)."""
    config = config or ScaffoldConfig()
    env = EpisodeEnv("bwrap", config, l_thr=min(10, config.max_turns - 1))
    result = run_episode(task, ScriptedPolicy(replies, TOKENIZER), env, TOKENIZER)
    assert not result.trajectory.infrastructure_error, result.trajectory.infrastructure_error
    assert result.trajectory.num_turns == result.episode.turns
    return result.trajectory, result.episode


@pytest.mark.parametrize("task", TASKS, ids=lambda t: t.instance_id)
def test_gold_patch_through_edit_commands_earns_one(task):
    commands = patch_commands(task.patch)
    assert any(c.startswith(("edit ", "create ")) for c in commands)
    trajectory, episode = play(task, [reply(c) for c in commands] + [reply("submit")])
    assert episode.end_reason is EndReason.SUBMITTED
    assert all(step.exit_code == 0 for step in episode.steps[:-1]), [
        s.observation for s in episode.steps
    ]
    assert trajectory.resolved and trajectory.reward == 1.0


def test_submitting_nothing_earns_zero():
    task = BY_ID["swejax__b_roman_repeat"]
    trajectory, episode = play(task, [reply("ls"), reply("submit")])
    assert episode.end_reason is EndReason.SUBMITTED and episode.submission == ""
    assert trajectory.submission == "" and trajectory.reward == 0.0


def test_editing_the_wrong_line_earns_zero():
    task = BY_ID["swejax__b_roman_repeat"]
    path = task.patch.split(" b/", 1)[1].split("\n", 1)[0]
    wrong = f"edit --file {path} 1:0 << 'EOF'\n# looked at this file\nEOF"
    trajectory, episode = play(task, [reply(wrong), reply("submit")])
    assert path in episode.submission and trajectory.submission == episode.submission
    assert not trajectory.resolved and trajectory.reward == 0.0


def test_malformed_replies_are_format_errors_and_the_episode_goes_on():
    task = BY_ID["swejax__a_semver_prerelease"]
    malformed = [
        "I will look around first.",  # no block
        reply("ls") + "\n" + reply("pwd"),  # two blocks
        "```command\nls\n",  # never closed
        "```command\n\n```",  # empty
        "```bash\nls\n```",  # wrong tag
    ]
    gold = [reply(c) for c in patch_commands(task.patch)]
    trajectory, episode = play(task, [*malformed, *gold, reply("submit")])
    assert episode.format_errors == len(malformed)
    assert trajectory.format_error_turns == list(range(len(malformed)))
    for step in episode.steps[: len(malformed)]:
        assert step.command is None and step.format_error
        assert "```command" in step.observation and "(Current directory: /repo)" in step.observation
    assert episode.end_reason is EndReason.SUBMITTED
    # 5 + 1 + 1 = 7 turns: under L_thr, so no length penalty.
    assert trajectory.resolved and trajectory.reward == 1.0


def test_observations_end_with_the_prompt_line_and_state_persists():
    task = BY_ID["swejax__b_roman_repeat"]
    with open_episode(task) as episode:
        assert task.problem_statement.strip() in episode.first_message
        assert "submit" in episode.system_prompt and "40 turns" in episode.system_prompt
        step = episode.step(reply("cd roman && export X=1"))
        assert step.observation.splitlines()[0] == render("no_output")
        assert step.observation.endswith("(Open file: n/a) (Current directory: /repo/roman)")
        step = episode.step(reply("open convert.py 30"))
        assert step.observation.endswith(
            "(Open file: /repo/roman/convert.py) (Current directory: /repo/roman)"
        )
        step = episode.step(reply('echo "$X"; exit 3'))
        assert step.observation.startswith("1\n[exit code 3]") and step.exit_code == 3


def test_long_output_is_truncated_in_the_middle():
    task = BY_ID["swejax__b_roman_repeat"]
    config = ScaffoldConfig(max_observation_chars=1000)
    with open_episode(task, config=config) as episode:
        step = episode.step(reply("seq 1 10000"))
    body = step.observation.rsplit("\n", 1)[0]
    assert body.startswith("1\n2\n3\n") and body.endswith("9999\n10000")
    assert "characters of output cut here" in body and len(body) < 1200
    text = "x" * 50
    assert truncate_middle(text, 50) == text and len(truncate_middle(text * 10, 50)) < 200


def test_turn_limit_ends_the_episode_with_the_diff_so_far():
    task = BY_ID["swejax__b_roman_repeat"]
    gold = [reply(c) for c in patch_commands(task.patch)]
    config = ScaffoldConfig(max_turns=len(gold) + 1)
    trajectory, episode = play(task, [reply("ls"), *gold, reply("ls")], config)
    assert episode.end_reason is EndReason.TURN_LIMIT and episode.turns == len(gold) + 1
    assert trajectory.end_reason == "turn_limit" and trajectory.resolved
    assert grade(task, episode.submission).resolved
    with pytest.raises(EpisodeEnded):
        episode.step(reply("ls"))


def test_context_full_is_ended_by_the_caller_and_timeouts_are_reported():
    task = BY_ID["swejax__b_roman_repeat"]
    with open_episode(task, config=ScaffoldConfig(command_timeout=1)) as episode:
        step = episode.step(reply("sleep 5"))
        assert step.timed_out and "stopped after 1 seconds" in step.observation
        episode.end(EndReason.CONTEXT_FULL)
        episode.end(EndReason.SUBMITTED)  # the first reason stands
    assert episode.end_reason is EndReason.CONTEXT_FULL and episode.submission == ""


def test_a_failed_sandbox_ends_the_episode_as_an_infrastructure_failure():
    task = BY_ID["swejax__b_roman_repeat"]
    with open_episode(task) as episode:
        episode.sandbox.close()
        step = episode.step(reply("ls"))
    assert episode.end_reason is EndReason.SANDBOX_ERROR and "closed" in episode.error
    assert step.observation == "" and episode.submission is None


def test_a_failing_sandbox_host_is_an_infrastructure_error_for_its_episodes(monkeypatch):
    """The host's disk is full: every episode it plays and every grade it runs is a harness
    failure, kept out of the reward, and the rollout goes on."""
    from swejax.env import _task_sandbox

    def full_disk(task, path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_task_sandbox, "materialize", full_disk)
    task = BY_ID["swejax__b_roman_repeat"]
    env = EpisodeEnv("bwrap", ScaffoldConfig(), l_thr=10)
    result = run_episode(task, ScriptedPolicy([reply("submit")], TOKENIZER), env, TOKENIZER)
    trajectory = result.trajectory
    assert trajectory.end_reason == EndReason.SANDBOX_ERROR.value and trajectory.num_turns == 0
    assert "this host could not prepare the repository" in trajectory.infrastructure_error
    assert "No space left on device" in trajectory.infrastructure_error
    graded = grade(task, task.patch)
    assert not graded.resolved and "No space left" in graded.infrastructure_error


def test_failing_setup_names_the_task_and_command():
    task = dataclasses.replace(BY_ID["swejax__b_roman_repeat"], setup_commands=("false",))
    expected = "swejax__b_roman_repeat: setup command 'false' failed"
    with pytest.raises(SandboxError, match=expected), open_episode(task):
        pass


def test_bare_heredoc_delimiters_of_edit_are_quoted():
    assert quote_heredocs("edit 1:2 << EOF\n$x\nEOF") == "edit 1:2 << 'EOF'\n$x\nEOF"
    assert quote_heredocs("edit 1:2 <<EOF") == "edit 1:2 <<'EOF'"
    assert quote_heredocs("create a.py << END") == "create a.py << 'END'"
    assert quote_heredocs("cat << EOF") == "cat << EOF"  # other commands keep shell semantics
    assert quote_heredocs("edit 1:2 << 'EOF'") == "edit 1:2 << 'EOF'"
    task = BY_ID["swejax__b_roman_repeat"]
    with open_episode(task) as episode:
        episode.step(reply("create notes.txt << EOF\ncost: $HOME `date`\nEOF"))
        assert episode.step(reply("cat notes.txt")).observation.startswith("cost: $HOME `date`\n")
