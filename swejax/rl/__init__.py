"""RL pieces: the reward (and, to come, advantages, the DAPO loss and RFT selection)."""

from swejax.rl._reward import episode_reward, length_penalty

__all__ = ["episode_reward", "length_penalty"]
