"""Training: AdamW with the paper's settings, the RFT and DAPO objectives over packed rows,
gradient accumulation, non-finite steps skipped."""

from swejax.train._step import (
    BATCH_FIELDS,
    OptimizerConfig,
    Trainer,
    accumulated_gradients,
    learning_rate_schedule,
    make_optimizer,
    token_logprobs,
    train_step,
)

__all__ = [
    "BATCH_FIELDS",
    "OptimizerConfig",
    "Trainer",
    "accumulated_gradients",
    "learning_rate_schedule",
    "make_optimizer",
    "token_logprobs",
    "train_step",
]
