"""RL pieces: the reward, group advantages, the DAPO loss, RFT and DAPO training sequences, and
packing into training rows."""

from swejax.rl._advantages import group_advantages, keep_nonzero
from swejax.rl._dapo import dapo_loss
from swejax.rl._metrics import curate_pool, pass_at_k, pass_metrics
from swejax.rl._packing import PackedBatch, TrainSequence, first_fit, pack, row_count_for
from swejax.rl._reward import episode_reward, length_penalty
from swejax.rl._rft import DapoSelection, dapo_sequences, rft_sequences

__all__ = [
    "DapoSelection",
    "PackedBatch",
    "TrainSequence",
    "curate_pool",
    "dapo_loss",
    "dapo_sequences",
    "episode_reward",
    "first_fit",
    "group_advantages",
    "keep_nonzero",
    "length_penalty",
    "pack",
    "pass_at_k",
    "pass_metrics",
    "rft_sequences",
    "row_count_for",
]
