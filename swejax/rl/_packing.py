"""Packing trajectories into fixed-shape rows with segment ids, so padding waste stays small.

Each trajectory is one segment of a row: tokens, positions counting from 0 within the segment,
segment ids 1, 2, ... (0 is padding), and the per-token training fields carried alongside. Rows
are filled first-fit, longest first; the fill ratio (real tokens over row capacity) is reported.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class TrainSequence:
    """One trajectory to train on: token ids and per-token fields of the same length."""

    tokens: Sequence[int]
    loss_mask: Sequence[bool]  # action tokens: assistant content and its <|im_end|>
    old_logprobs: Sequence[float]  # pi_old of each token (0 where the mask is False)
    advantage: float


@dataclasses.dataclass(frozen=True)
class PackedBatch:
    """Rows [R, L] of packed segments (numpy; device arrays are made by the train step)."""

    tokens: np.ndarray  # int32
    positions: np.ndarray  # int32, from 0 within each segment
    segment_ids: np.ndarray  # int32, 0 = padding
    loss_mask: np.ndarray  # bool; the first token of a segment never carries loss
    old_logprobs: np.ndarray  # float32
    advantages: np.ndarray  # float32, per token
    placement: list[tuple[int, int, int]]  # (row, start, length) of each input sequence

    @property
    def fill_ratio(self) -> float:
        return float((self.segment_ids > 0).mean()) if self.segment_ids.size else 0.0

    @property
    def num_action_tokens(self) -> int:
        return int(self.loss_mask.sum())


def row_count_for(rows: int, multiple: int) -> int:
    """`rows` rounded up to a power of two times `multiple`, so that the train step sees few
    distinct shapes (each is compiled once)."""
    units = math.ceil(rows / multiple)
    return multiple * (1 << max(0, units - 1).bit_length())


def first_fit(lengths: Sequence[int], row_length: int) -> list[list[int]]:
    """Indices grouped into rows of at most `row_length` tokens, longest first."""
    rows: list[list[int]] = []
    room: list[int] = []
    for index in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        if lengths[index] > row_length:
            raise ValueError(
                f"sequence {index} has {lengths[index]} tokens, more than a row ({row_length})"
            )
        for row, free in enumerate(room):
            if lengths[index] <= free:
                rows[row].append(index)
                room[row] -= lengths[index]
                break
        else:
            rows.append([index])
            room.append(row_length - lengths[index])
    return rows


def pack(
    sequences: Sequence[TrainSequence], row_length: int, num_rows: int | None = None
) -> PackedBatch:
    """Pack into rows of `row_length`; `num_rows` pads to a fixed row count (an error if the
    sequences need more)."""
    for i, s in enumerate(sequences):
        if not len(s.tokens) == len(s.loss_mask) == len(s.old_logprobs):
            raise ValueError(f"sequence {i}: tokens, loss_mask and old_logprobs differ in length")
    groups = first_fit([len(s.tokens) for s in sequences], row_length)
    rows = len(groups) if num_rows is None else num_rows
    if len(groups) > rows:
        raise ValueError(f"the sequences need {len(groups)} rows of {row_length}; {rows} given")
    shape = (rows, row_length)
    tokens = np.zeros(shape, np.int32)
    positions = np.zeros(shape, np.int32)
    segment_ids = np.zeros(shape, np.int32)
    loss_mask = np.zeros(shape, bool)
    old_logprobs = np.zeros(shape, np.float32)
    advantages = np.zeros(shape, np.float32)
    placement: list[tuple[int, int, int]] = [(0, 0, 0)] * len(sequences)
    for row, members in enumerate(groups):
        start = 0
        for segment, index in enumerate(members, start=1):
            s = sequences[index]
            end = start + len(s.tokens)
            tokens[row, start:end] = s.tokens
            positions[row, start:end] = np.arange(len(s.tokens))
            segment_ids[row, start:end] = segment
            loss_mask[row, start:end] = s.loss_mask
            loss_mask[row, start] = False  # nothing in the segment predicts its first token
            old_logprobs[row, start:end] = s.old_logprobs
            advantages[row, start:end] = s.advantage
            placement[index] = (row, start, len(s.tokens))
            start = end
    return PackedBatch(
        tokens, positions, segment_ids, loss_mask, old_logprobs, advantages, placement
    )
