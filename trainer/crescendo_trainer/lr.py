"""The learning-rate rule: how the LR follows the global batch, the warm-up and the schedule.

lr(step, epoch, B) = base · scale(B / B_ref) · warm-up(step) · decay(epoch), with
scale(x) = x (linear, Goyal et al. 2017; ABSA and AdaBatch), √x (sqrt, Krizhevsky 2014) or 1,
warm-up(step) = min(1, (step + 1) / warmupSteps) and decay(epoch) = decayFactor^(number of
decayEpochs ≤ epoch). The rule is a pure function of its inputs, so a restart at another world
size recomputes the same LR from the checkpointed step, epoch and B: no LR state to lose.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from crescendo_spec.model import LearningRate


@dataclass(frozen=True)
class LrRule:
    base: float
    scaling: str  # linear | sqrt | none
    reference_batch: int
    warmup_steps: int
    decay_epochs: tuple[int, ...]
    decay_factor: float

    @classmethod
    def from_spec(cls, spec: LearningRate, initial_batch: int) -> LrRule:
        return cls(
            base=spec.base,
            scaling=spec.scaling,
            reference_batch=spec.reference_batch or initial_batch,
            warmup_steps=spec.warmup_steps,
            decay_epochs=tuple(sorted(spec.decay_epochs)),
            decay_factor=spec.decay_factor,
        )

    def batch_scale(self, global_batch: int) -> float:
        ratio = global_batch / self.reference_batch
        if self.scaling == "linear":
            return ratio
        if self.scaling == "sqrt":
            return math.sqrt(ratio)
        return 1.0

    def warmup(self, step: int) -> float:
        if self.warmup_steps == 0:
            return 1.0
        return min(1.0, (step + 1) / self.warmup_steps)

    def decay(self, epoch: int) -> float:
        passed = sum(1 for e in self.decay_epochs if e <= epoch)
        return float(self.decay_factor**passed)

    def factor(self, step: int, epoch: int, global_batch: int) -> float:
        """The multiplier of the LR at the reference batch: what the job applies on top of a
        user's optimizer (and scheduler), whose own LR is the one at `referenceBatch`."""
        return self.batch_scale(global_batch) * self.warmup(step) * self.decay(epoch)

    def __call__(self, step: int, epoch: int, global_batch: int) -> float:
        return self.base * self.factor(step, epoch, global_batch)


@contextlib.contextmanager
def scaled_lr(optimizer: torch.optim.Optimizer, factor: float) -> Iterator[None]:
    """The rule on a user's optimizer for one optimizer.step(): every group's LR times `factor`
    (LrRule.factor), then put back, so the user's scheduler keeps seeing its own values."""
    saved = [group["lr"] for group in optimizer.param_groups]
    for group in optimizer.param_groups:
        group["lr"] = group["lr"] * factor
    try:
        yield
    finally:
        for group, lr in zip(optimizer.param_groups, saved, strict=True):
            group["lr"] = lr
