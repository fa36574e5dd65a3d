"""A finished episode as training data: the exact token ids, what was sampled, and how it ended."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator


@dataclasses.dataclass
class Trajectory:
    """Token in, token out (docs/architecture.md): `tokens` are the ids the sampler saw and
    produced, in order; everything below is aligned with them or indexes into them."""

    task_id: str
    group: int  # which rollout of its task (advantages are taken within a task's group)
    tokens: list[int] = dataclasses.field(default_factory=list)
    loss_mask: list[bool] = dataclasses.field(default_factory=list)  # sampled tokens
    logprobs: list[float] = dataclasses.field(default_factory=list)  # sampler's, 0 elsewhere
    turns: list[tuple[int, int]] = dataclasses.field(default_factory=list)  # sampled [start, end)
    format_error_turns: list[int] = dataclasses.field(default_factory=list)
    end_reason: str = ""
    resolved: bool = False
    reward: float = 0.0
    infrastructure_error: str = ""  # set: the harness failed; keep out of training
    submission: str = ""

    def add_context(self, ids: list[int]) -> None:
        self.tokens += ids
        self.loss_mask += [False] * len(ids)
        self.logprobs += [0.0] * len(ids)

    def add_sampled(self, ids: list[int], logprobs: list[float]) -> None:
        start = len(self.tokens)
        self.tokens += ids
        self.loss_mask += [True] * len(ids)
        self.logprobs += [float(x) for x in logprobs]
        self.turns.append((start, len(self.tokens)))

    @property
    def num_turns(self) -> int:
        return len(self.turns)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, line: str) -> Trajectory:
        fields = json.loads(line)
        fields["turns"] = [tuple(t) for t in fields["turns"]]
        return cls(**fields)


def write_trajectory(path: str, trajectory: Trajectory) -> None:
    """Append one line and make it durable before returning (a kill loses no finished one)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(trajectory.to_json() + "\n")
        f.flush()
        os.fsync(f.fileno())


def rewrite_trajectories(path: str, trajectories: list[Trajectory]) -> None:
    """Replace `path` with `trajectories`, in their order, at once (a kill leaves the old file
    or the new one, never a mix)."""
    partial = path + ".rewrite"
    with open(partial, "w", encoding="utf-8") as f:
        f.writelines(t.to_json() + "\n" for t in trajectories)
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, path)


def read_trajectories(path: str) -> Iterator[Trajectory]:
    """Every complete line of `path` (a line cut short by a kill is skipped)."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.endswith("\n"):
                yield Trajectory.from_json(line)
