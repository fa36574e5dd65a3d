"""The reward of docs/method.md against hand-computed values."""

import pytest

from swejax.rl import episode_reward, length_penalty


@pytest.mark.parametrize(
    "turns, l_thr, t_max, expected",
    [
        (0, 10, 40, 0.0),
        (9, 10, 40, 0.0),
        (10, 10, 40, 0.0),
        (25, 10, 40, -0.5),  # docs/method.md: a correct answer in 25 of 40 turns earns 0.5
        (40, 10, 40, -1.0),
        (45, 10, 80, -35 / 70),  # stage 2
        (80, 10, 80, -1.0),
    ],
)
def test_length_penalty(turns, l_thr, t_max, expected):
    assert length_penalty(turns, l_thr, t_max) == pytest.approx(expected)


def test_episode_reward_adds_tests_and_length():
    assert episode_reward(True, 25) == pytest.approx(0.5)
    assert episode_reward(True, 5) == 1.0
    assert episode_reward(False, 5) == 0.0
    assert episode_reward(False, 40) == pytest.approx(-1.0)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="num_turns"):
        length_penalty(-1)
    with pytest.raises(ValueError, match="l_thr < t_max"):
        length_penalty(5, l_thr=40, t_max=40)
