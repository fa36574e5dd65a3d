"""The embedded default (the demo), spelled out as a file: a tiny model learns four built-in tasks.

    python -m swejax.main --config=configs/tiny.py
    export XLA_FLAGS=--xla_force_host_platform_device_count=8  # eight fake CPU devices
    python -m swejax.main check --config=configs/tiny.py

A good run (about 5 minutes on 2 CPU cores): an evaluation of the random model (Pass@1 0), four
gold demonstrations written through the scaffold, RFT on them, an evaluation (Pass@1 around 0.7
on the four tasks at temperature 1), DAPO iterations, a final evaluation, and a summary table;
runs/tiny/ holds metrics.jsonl, every trajectory, checkpoints and plots. Run it again and it
resumes (here: finds everything done). The values are in swejax/config/demo.py.
"""

from swejax.config.demo import get_config

__all__ = ["get_config"]
