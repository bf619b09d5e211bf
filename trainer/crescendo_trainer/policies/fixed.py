"""`fixed`: the global batch never changes (the baseline)."""

from __future__ import annotations

from crescendo_trainer.policies.base import BatchSizePolicy, Decision, Signals


class FixedPolicy(BatchSizePolicy):
    name = "fixed"

    def decide(self, signals: Signals) -> Decision:
        return self.hold(signals, "fixed policy")
