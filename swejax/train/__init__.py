"""Training: AdamW with the paper's settings, the RFT and DAPO objectives over packed rows,
gradient accumulation, non-finite steps skipped."""

from swejax.train._step import (
    BATCH_FIELDS,
    OptimizerConfig,
    Trainer,
    TrainStep,
    accumulated_gradients,
    jit_train_step,
    learning_rate_schedule,
    make_optimizer,
    state_shardings,
    token_logprobs,
)

__all__ = [
    "BATCH_FIELDS",
    "OptimizerConfig",
    "TrainStep",
    "Trainer",
    "accumulated_gradients",
    "jit_train_step",
    "learning_rate_schedule",
    "make_optimizer",
    "state_shardings",
    "token_logprobs",
]
