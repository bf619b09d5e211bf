"""`gns`: batch growth toward the gradient noise scale (McCandlish, Kaplan, Amodei, Dario,
arXiv 1812.06162), the AdaptDL/Pollux peer anchor.

Owns the decision only: grow B toward B_simple when the predicted gain in steps is large
enough. The estimate itself is a measurement (noise.py, wired by measurements.py) and reaches
the policy as `Signals.measured["noise_scale"]`, present once the estimator has settled.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from crescendo_spec.model import GnsSettings

from crescendo_trainer.policies.base import (
    CAPPED,
    NOISE_SCALE,
    NOISE_SCALE_SIMPLE,
    NOT_FINITE,
    BatchSizePolicy,
    Decision,
    Signals,
)


class GnsPolicy(BatchSizePolicy):
    """Grow B to the largest B·factorᵏ ≤ B_simple when the predicted gain is ≥ minGain."""

    name = "gns"

    def __init__(self, initial: int, maximum: int, settings: GnsSettings) -> None:
        super().__init__(initial, maximum)
        self.settings = settings
        self.last_change_step = 0

    def measurements(self, step: int, epoch: int, epoch_end: bool) -> frozenset[str]:
        return frozenset({NOISE_SCALE_SIMPLE})

    @staticmethod
    def predicted_gain(current: int, target: int, noise: float) -> float:
        # Steps to a target loss go as S(B) = S_min·(1 + B_noise/B) (McCandlish et al., eq. 2.11).
        # Workers follow B, so a step takes about as long at either size and the gain in time
        # is S(B)/S(B') − 1.
        return (1.0 + noise / current) / (1.0 + noise / target) - 1.0

    def decide(self, signals: Signals) -> Decision:
        refused = self.refuse_not_finite(signals)
        if refused is not None:
            return refused
        current = signals.global_batch
        if signals.step - self.last_change_step < self.settings.cooldown_steps:
            return self.hold(signals, "cooldown")
        if NOISE_SCALE_SIMPLE not in signals.measured:
            return self.hold(signals, "noise scale not settled yet")
        noise = signals.measured[NOISE_SCALE_SIMPLE]
        if not math.isfinite(noise) or noise <= 0.0:
            return Decision(current, NOT_FINITE, f"B_simple {noise:.4g} not usable: hold")
        factor = self.settings.factor
        target = current
        while target * factor <= min(noise, self.maximum):
            target *= factor
        if target > current:
            gain = self.predicted_gain(current, target, noise)
            if gain >= self.settings.min_gain:
                self.last_change_step = signals.step
                least = self.settings.min_gain
                why = f"B_simple {noise:.4g}, predicted gain {gain:.0%} ≥ {least:.0%}"
                return Decision(target, NOISE_SCALE, f"{why} → {current}→{target}")
            return self.hold(signals, f"B_simple {noise:.4g}: gain {gain:.1%} too small")
        if current * factor <= noise and current >= self.maximum:
            return Decision(current, CAPPED, f"B_simple {noise:.4g}: already at max {self.maximum}")
        if self.settings.allow_shrink:
            target = current
            while target // factor >= max(noise, self.initial) and target // factor >= 1:
                target //= factor
            if target < current:
                self.last_change_step = signals.step
                return Decision(
                    target, NOISE_SCALE, f"B_simple {noise:.4g} < {current} → {current}→{target}"
                )
        return self.hold(signals, f"B_simple {noise:.4g} < {current * factor}")

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "last_change_step": self.last_change_step,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.last_change_step = int(state["last_change_step"])
