"""`convert`: Hugging Face safetensors to swejax checkpoints and back, over the config's mesh."""

from __future__ import annotations

import argparse
import logging
import os

from swejax import builder
from swejax.config import Config
from swejax.errors import UserError

SUMMARY = "convert checkpoints: --from-hf DIR --to DIR, or --from DIR --to-hf DIR"
_LISTED_FILES = 20
logger = logging.getLogger("swejax")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from-hf", metavar="DIR", help="read a Hugging Face checkpoint")
    parser.add_argument("--to", metavar="DIR", help="write a swejax checkpoint")
    parser.add_argument("--from", dest="from_dir", metavar="DIR", help="read a swejax checkpoint")
    parser.add_argument("--to-hf", metavar="DIR", help="write a Hugging Face checkpoint")
    parser.epilog = (
        "Weights are held in config.model.param_dtype and spread over config.mesh "
        "(--config.model.param_dtype=bfloat16 keeps bfloat16 weights)."
    )


def check_arguments(options: argparse.Namespace) -> None:
    """Exactly one direction, with both of its directories, and an output that holds nothing."""
    from_hf = options.from_hf is not None or options.to is not None
    to_hf = options.from_dir is not None or options.to_hf is not None
    both_forms = "--from-hf DIR --to DIR, or --from DIR --to-hf DIR"
    if from_hf and to_hf:
        raise UserError(f"convert takes one direction, not both: {both_forms}")
    if not from_hf and not to_hf:
        raise UserError(f"convert needs a direction: {both_forms}")
    if from_hf and (options.from_hf is None or options.to is None):
        raise UserError("convert from Hugging Face needs both --from-hf DIR and --to DIR")
    if to_hf and (options.from_dir is None or options.to_hf is None):
        raise UserError("convert to Hugging Face needs both --from DIR and --to-hf DIR")
    output = options.to if from_hf else options.to_hf
    if os.path.exists(output) and (not os.path.isdir(output) or os.listdir(output)):
        raise UserError(f"output {output} already exists and is not an empty directory")


def run(config: Config, options: argparse.Namespace) -> int:
    from swejax import models
    from swejax.run import load_checkpoint, save_checkpoint

    mesh = builder.make_mesh(config)
    if options.from_hf is not None:
        logger.info("reading the Hugging Face checkpoint %s", options.from_hf)
        model = builder.from_user_input(
            f"cannot read Hugging Face checkpoint {options.from_hf}",
            models.load_hf_checkpoint,
            options.from_hf,
            dtype=config.model.dtype,
            mesh=mesh,
            param_dtype=config.model.param_dtype,
        )
        save_checkpoint(model, options.to)
        models.copy_side_files(options.from_hf, options.to)
        output = options.to
    else:
        logger.info("reading the swejax checkpoint %s", options.from_dir)
        model = builder.from_user_input(
            f"cannot read swejax checkpoint {options.from_dir}",
            load_checkpoint,
            options.from_dir,
            mesh=mesh,
        )
        models.save_hf_checkpoint(model, options.to_hf)
        models.copy_side_files(options.from_dir, options.to_hf)
        output = options.to_hf
    print(written_summary(output))
    return 0


def written_summary(directory: str) -> str:
    """What `directory` now holds: its files with sizes (the first few) and the total."""
    files = sorted(
        os.path.join(root, name) for root, _, names in os.walk(directory) for name in names
    )
    total = sum(os.path.getsize(path) for path in files)
    lines = [f"wrote {directory}: {len(files)} files, {_human_size(total)}"]
    for path in files[:_LISTED_FILES]:
        lines.append(f"  {os.path.relpath(path, directory)}  {_human_size(os.path.getsize(path))}")
    if len(files) > _LISTED_FILES:
        lines.append(f"  ... and {len(files) - _LISTED_FILES} more")
    return "\n".join(lines)


def _human_size(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable: the loop returns at GiB")
