"""The agent-computer interface of the paper (docs/method.md): prompts, reply parsing, the
editor tools (run inside the sandbox, `swejax/env/tools/swe_tools.py`), observations, turn
limits and `submit`. The loop that drives an episode with a policy is `swejax.rollout`."""

from swejax.env.scaffold._demo import patch_commands
from swejax.env.scaffold._episode import (
    EndReason,
    Episode,
    EpisodeEnded,
    ScaffoldConfig,
    Step,
    open_episode,
    quote_heredocs,
    truncate_middle,
)
from swejax.env.scaffold._prompts import render
from swejax.env.scaffold._reply import Action, FormatError, parse_reply

__all__ = [
    "Action",
    "EndReason",
    "Episode",
    "EpisodeEnded",
    "FormatError",
    "ScaffoldConfig",
    "Step",
    "open_episode",
    "parse_reply",
    "patch_commands",
    "quote_heredocs",
    "render",
    "truncate_middle",
]
