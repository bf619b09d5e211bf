"""`abs` / `absa`: batch growth from curvature (Yao et al., arXiv 1810.01021; code HessianFlow).

Once per `checkEveryEpochs` epochs the trainer measures the Hessian's top eigenvalue λ (hessian.py,
on a fixed seeded batch, the same on every rank) and hands it in as `hessian_eigenvalue`:
    first λ                    → λ_ref = λ, hold
    λ ≤ λ_ref / κ              → B ← min(factor·B, B_max), λ_ref = λ          (reason `curvature`)
    `durationEpochs` epochs since the last increase → B ← min(factor·B, B_max), λ_ref kept
                                                                                (reason `duration`)
A NaN/inf λ or loss holds (and neither rule fires that epoch). The learning rate follows B through
the LR rule (`learningRate.scaling: linear`, no warm-up in the authors' code), so lr/B is constant.

ABSA adds adversarial samples (adversarial/mixing.py): in every block of B0 samples the first
⌊r·B0⌋ are FGSM copies, r = r0 halved at every increase, 0 once B = B_max or after
`adversarialEpochsFraction` (½) of the epochs. `abs` is the same policy with r = 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from crescendo_spec.model import AbsaSettings

from crescendo_trainer.policies.base import (
    CURVATURE,
    DURATION,
    HESSIAN_EIGENVALUE,
    BatchSizePolicy,
    Decision,
    Signals,
)


class AbsaPolicy(BatchSizePolicy):
    name = "absa"

    def __init__(
        self,
        initial: int,
        maximum: int,
        settings: AbsaSettings,
        *,
        adversarial_ratio: float = 0.2,
        total_epochs: int | None = None,
    ) -> None:
        super().__init__(initial, maximum)
        if not 0.0 <= adversarial_ratio <= 1.0:
            raise ValueError(f"adversarial.ratio: must lie in [0, 1], got {adversarial_ratio}")
        if not settings.kappa > 1.0:
            raise ValueError(f"batch.absa.kappa: κ must be > 1, got {settings.kappa}")
        self.settings = settings
        self.base_ratio = adversarial_ratio
        self.total_epochs = total_epochs
        self.reference: float | None = None  # λ_ref
        self.last_increase_epoch = 0  # epochs completed at the last increase (or the start)
        self.last_eigenvalue = math.nan

    def measurements(self, step: int, epoch: int, epoch_end: bool) -> frozenset[str]:
        if epoch_end and (epoch + 1) % self.settings.check_every_epochs == 0:
            return frozenset({HESSIAN_EIGENVALUE})
        return frozenset()

    def adversarial_ratio(self, global_batch: int, epoch: int) -> float | None:
        if global_batch >= self.maximum:
            return 0.0
        if self.total_epochs is not None and epoch >= (
            self.settings.adversarial_epochs_fraction * self.total_epochs
        ):
            return 0.0
        # Increases so far, from B itself: a pure function of (B, epoch), so a restart or a
        # rank that joined late computes the same ratio without extra state.
        growth = math.log(global_batch / self.initial, self.settings.factor)
        increases = max(0, math.ceil(growth - 1e-9))
        return float(self.base_ratio / 2**increases)

    def decide(self, signals: Signals) -> Decision:
        refused = self.refuse_not_finite(signals)
        if refused is not None:
            return refused
        if not signals.epoch_end:
            return self.hold(signals)
        eigenvalue = signals.measured.get(HESSIAN_EIGENVALUE)
        held = None
        if eigenvalue is not None:
            self.last_eigenvalue = eigenvalue
            by_curvature, held = self._curvature_rule(signals, eigenvalue)
            if by_curvature is not None:
                return by_curvature
        return self._duration_rule(signals) or held or self.hold(signals)

    def _curvature_rule(
        self, signals: Signals, eigenvalue: float
    ) -> tuple[Decision | None, Decision | None]:
        """(a growth by the curvature rule, or the hold that says why it did not fire)."""
        if eigenvalue <= 0.0:
            # The power method returns the eigenvalue of largest magnitude, which on saturated
            # untrained networks was the negative one in 4 of 6 cases: against a positive
            # reference it would read as "curvature fell". Only positive curvature counts.
            why = f"curvature rule skipped: λ {eigenvalue:.4g} is not positive"
            return None, self.hold(signals, why)
        kappa = self.settings.kappa
        if self.reference is None:
            self.reference = eigenvalue
            return None, self.hold(signals, f"λ {eigenvalue:.4g} is the reference")
        if eigenvalue > self.reference / kappa:
            return None, self.hold(signals, f"λ {eigenvalue:.4g} > {self.reference:.4g}/{kappa:g}")
        why = f"curvature rule: λ {eigenvalue:.4g} ≤ {self.reference:.4g}/{kappa:g}"
        decision = self.grow(signals, self.settings.factor, CURVATURE, why)
        if decision.global_batch > signals.global_batch:
            self.reference = eigenvalue
            self.last_increase_epoch = signals.epoch + 1
        return decision, None

    def _duration_rule(self, signals: Signals) -> Decision | None:
        """Grow anyway after `durationEpochs` epochs without an increase (λ_ref unchanged)."""
        done = signals.epoch + 1  # epochs completed
        waited = done - self.last_increase_epoch
        if waited < self.settings.duration_epochs:
            return None
        limit = self.settings.duration_epochs
        why = f"duration rule: {waited} epochs without an increase (durationEpochs {limit})"
        decision = self.grow(signals, self.settings.factor, DURATION, why)
        if decision.global_batch > signals.global_batch:
            self.last_increase_epoch = done
        return decision

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "reference": self.reference,
            "last_increase_epoch": self.last_increase_epoch,
            "last_eigenvalue": self.last_eigenvalue,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.reference = state["reference"]
        self.last_increase_epoch = int(state["last_increase_epoch"])
        self.last_eigenvalue = float(state["last_eigenvalue"])


class AbsPolicy(AbsaPolicy):
    """ABS: ABSA's curvature rule without adversarial samples."""

    name = "abs"

    def adversarial_ratio(self, global_batch: int, epoch: int) -> float | None:
        return 0.0
