"""Training: AdamW with the paper's settings, the RFT and DAPO objectives over packed rows,
gradient accumulation, non-finite steps skipped.

    tx = make_optimizer(config.optimizer, learning_rate=1e-6, weight_decay=0.1)
    trainer = Trainer(model, tx, Objective("dapo", eps_low=0.2, eps_high=0.3), mesh=mesh)
    metrics = trainer.step({k: getattr(packed, k) for k in BATCH_FIELDS})   # in place
"""

from swejax.train._loss import (
    BATCH_FIELDS,
    Objective,
    accumulated_gradients,
    micro_batch_loss,
    token_logprobs,
)
from swejax.train._optimizer import make_optimizer, warmup_cosine
from swejax.train._step import (
    Trainer,
    TrainStep,
    global_rows,
    jit_train_step,
    local_rows,
    state_shardings,
)

__all__ = [
    "BATCH_FIELDS",
    "Objective",
    "TrainStep",
    "Trainer",
    "accumulated_gradients",
    "global_rows",
    "jit_train_step",
    "local_rows",
    "make_optimizer",
    "micro_batch_loss",
    "state_shardings",
    "token_logprobs",
    "warmup_cosine",
]
