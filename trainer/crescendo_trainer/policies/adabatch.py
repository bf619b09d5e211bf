"""`adabatch`: scheduled batch growth (Devarakonda, Naumov, Garland, arXiv 1712.02029).

Every `resizeEveryEpochs` epochs the global batch is multiplied by β (`factor`), up to
`batch.max`. The learning rate is not touched here: with `learningRate.scaling: linear` the
LR rule multiplies it by β too, so lr/B stays on the fixed-batch schedule (the paper's invariant);
the paper's extra decay γ is the LR schedule's own step decay at the same epoch.
"""

from __future__ import annotations

from collections.abc import Mapping
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
