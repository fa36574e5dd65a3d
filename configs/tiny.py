"""The embedded default (the demo), spelled out as a file: a tiny model learns four built-in tasks.

    python -m swejax.main --config=configs/tiny.py
    export XLA_FLAGS=--xla_force_host_platform_device_count=8  # eight fake CPU devices
    python -m swejax.main check --config=configs/tiny.py

A good run (about 5 minutes on 2 idle CPU cores): an evaluation of the random model (Pass@1 0),
eight gold demonstrations written through the scaffold (each task straight to the fix, and the
long way), RFT on them, an evaluation (Pass@1 0.453: half the episodes take the long way and
run out of turns), three DAPO iterations each followed by an evaluation (0.672 after the
third), and a summary table; runs/tiny/ holds metrics.jsonl, every trajectory, checkpoints,
plots and report.html. Run it again and it resumes (here: finds everything done).
The values are in swejax/config/demo.py.
"""

from swejax.config.demo import get_config

__all__ = ["get_config"]
