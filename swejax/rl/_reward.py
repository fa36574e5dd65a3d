"""The episode reward (docs/method.md): tests passed, minus a penalty for long episodes."""

from __future__ import annotations


def length_penalty(num_turns: int, l_thr: int = 10, t_max: int = 40) -> float:
    """0 below `l_thr` turns, then falling linearly: (l_thr - n) / (t_max - l_thr).

    A correct answer in 25 of 40 turns earns 1 - 0.5 = 0.5; at the turn limit, 0.
    """
    if num_turns < 0:
        raise ValueError(f"num_turns must be >= 0, got {num_turns}")
    if not 0 <= l_thr < t_max:
        raise ValueError(f"need 0 <= l_thr < t_max, got l_thr={l_thr}, t_max={t_max}")
    if num_turns < l_thr:
        return 0.0
    return (l_thr - num_turns) / (t_max - l_thr)


def episode_reward(resolved: bool, num_turns: int, l_thr: int = 10, t_max: int = 40) -> float:
    """R = R_tests + R_length, R_tests = 1 iff every FAIL_TO_PASS and PASS_TO_PASS test passes."""
    return float(resolved) + length_penalty(num_turns, l_thr, t_max)
