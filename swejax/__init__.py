"""swejax: multi-turn RL (RFT, then DAPO) for software-engineering agents on Qwen2.5, in JAX."""

__version__ = "0.1.0"
