"""`adabatch`: scheduled batch growth (Devarakonda, Naumov, Garland, arXiv 1712.02029).

Every `resizeEveryEpochs` epochs the global batch is multiplied by β (`factor`), up to
`batch.max`. The learning rate is not touched here: with `learningRate.scaling: linear` the
LR rule multiplies it by β too, so lr/B stays on the fixed-batch schedule (the paper's invariant);
the paper's extra decay γ is the LR schedule's own step decay at the same epoch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from crescendo_spec.model import AdaBatchSettings

from crescendo_trainer.policies.base import SCHEDULE, BatchSizePolicy, Decision, Signals


class AdaBatchPolicy(BatchSizePolicy):
    name = "adabatch"

    def __init__(self, initial: int, maximum: int, settings: AdaBatchSettings) -> None:
        super().__init__(initial, maximum)
        self.settings = settings

    def decide(self, signals: Signals) -> Decision:
        refused = self.refuse_not_finite(signals)
        if refused is not None:
            return refused
        every = self.settings.resize_every_epochs
        if not signals.epoch_end or (signals.epoch + 1) % every != 0:
            return self.hold(signals)
        why = f"epoch {signals.epoch + 1} is a multiple of resizeEveryEpochs {every}"
        return self.grow(signals, self.settings.factor, SCHEDULE, why)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)  # stateless beyond B, which the trainer checkpoints


def batch_at_epoch(epoch: int, initial: int, maximum: int, settings: AdaBatchSettings) -> int:
    """B during `epoch` (0-based) under AdaBatch: B0·β^⌊epoch / resizeEvery⌋, capped at max."""
    grown: int = initial * settings.factor ** (epoch // settings.resize_every_epochs)
    return min(grown, maximum)


def optimizer_updates(dataset_size: int, epochs: int, batch_of_epoch: Callable[[int], int]) -> int:
    """Optimizer steps over `epochs` epochs, ⌊N/B⌋ per epoch (the last partial batch dropped)."""
    return sum(dataset_size // batch_of_epoch(e) for e in range(epochs))
