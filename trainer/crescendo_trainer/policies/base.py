"""The batch-size policy interface: who owns the global batch size B.

A policy is a small stateful object. The trainer calls `decide` at every check point (after each
optimizer step, with `epoch_end` set on the last step of an epoch) with the same `Signals` on
every rank, so every rank takes the same decision. Measurements that cost something (the
Hessian's top eigenvalue, the gradient noise scale) are computed only when `measurements` asks
for them, and reach `decide` through `Signals.measured`. Everything a restart needs is in
`state_dict`, versioned.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# Low-cardinality reason codes, exported as the `reason` label of the decisions counter.
HOLD = "hold"
SCHEDULE = "schedule"
CURVATURE = "curvature"
DURATION = "duration"
NOISE_SCALE = "noise_scale"
CAPPED = "capped"
NOT_FINITE = "not_finite"
RAMP = "ramp"  # a batch schedule over consumed tokens or samples moved B (policy `schedule`)
GOODPUT = "goodput"  # predicted throughput × statistical efficiency moved B (policy `goodput`)
REASON_CODES = (
    HOLD, SCHEDULE, CURVATURE, DURATION, NOISE_SCALE, CAPPED, NOT_FINITE, RAMP, GOODPUT
)

# Names of the measurements a policy may ask for.
HESSIAN_EIGENVALUE = "hessian_eigenvalue"
NOISE_SCALE_SIMPLE = "noise_scale"
HESSIAN_TRACE = "hessian_trace"  # for the dashboard only; no policy decides on it


@dataclass(frozen=True)
class Signals:
    """What a policy sees at a check point; identical on every rank."""

    step: int  # optimizer steps completed
    epoch: int  # epoch of the step just completed (0-based)
    epoch_end: bool  # this step completed the epoch
    global_batch: int  # B used by the step just completed
    loss: float  # mean training loss of that step, all-reduced
    measured: Mapping[str, float] = field(default_factory=dict)
    # Global samples (sequences, for a language model) consumed by all completed steps since the
    # job started, over every replica. It must survive restarts and rescales (resumed from the
    # checkpoint, never reset), since the `schedule` policy decides from it alone. Last, with a
    # default, so positional callers still fit.
    samples: int = 0
    # How the step just completed ran, for policies that model throughput (`goodput`): the
    # processes in the group, this step's wall time (the ranks' mean, agreed in the step's
    # all-reduce, so that every rank decides on the same number), the micro-steps per rank and
    # the largest micro-batch.
    world_size: int = 1
    step_seconds: float = 0.0
    accumulation: int = 1
    micro_batch: int = 0


@dataclass(frozen=True)
class GradientNorms:
    """One step's squared gradient norms for the noise-scale estimate (gns.py), same on every rank.

    `local_sq`: mean over workers of |g_b|², each worker's squared norm before the all-reduce
    (its batch of `local_batch` samples); `global_sq`: |g_B|² of the all-reduced gradient over
    `global_batch` samples. With one worker, the step's micro-batches play the workers
    (noise.MicroBatchNorms), and `local_batch` is their sizes' harmonic mean.
    """

    local_sq: float
    global_sq: float
    local_batch: float
    global_batch: int


@dataclass(frozen=True)
class Decision:
    """The policy's answer: the global batch from the next step on, and why."""

    global_batch: int
    code: str  # one of REASON_CODES
    reason: str  # for the log: "λ 3.1 ≤ 6.4/2 → 256→512"

    @property
    def changed(self) -> bool:
        return self.code not in (HOLD, NOT_FINITE, CAPPED)


class BatchSizePolicy(ABC):
    """Base of every policy; subclasses set `name` and implement `decide`."""

    name: str = "base"
    version: int = 1

    def __init__(self, initial: int, maximum: int) -> None:
        self.initial = initial
        self.maximum = maximum

    def measurements(self, step: int, epoch: int, epoch_end: bool) -> frozenset[str]:
        """The measurements `decide` needs at this check point (none by default)."""
        return frozenset()

    def adversarial_ratio(self, global_batch: int, epoch: int) -> float | None:
        """Share of each micro-batch to perturb, or None to use the spec's ratio unchanged."""
        return None

    @abstractmethod
    def decide(self, signals: Signals) -> Decision:
        """The global batch from the next step on."""

    def state_dict(self) -> dict[str, Any]:
        return {"version": self.version, "name": self.name}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("name") != self.name:
            raise ValueError(
                f"checkpoint holds the state of policy {state.get('name')!r}, "
                f"the job runs {self.name!r}: batch.policy cannot change on resume"
            )
        if state.get("version") != self.version:
            raise ValueError(
                f"policy state version {state.get('version')} is not {self.version}"
            )

    @staticmethod
    def hold(signals: Signals, reason: str = "no change") -> Decision:
        return Decision(signals.global_batch, HOLD, reason)

    @staticmethod
    def refuse_not_finite(signals: Signals) -> Decision | None:
        """Never grow on a NaN/inf loss or measurement: hold, and say so."""
        values = {"loss": signals.loss, **signals.measured}
        bad = [k for k, v in values.items() if not math.isfinite(v)]
        if bad:
            return Decision(signals.global_batch, NOT_FINITE, f"{', '.join(bad)} not finite: hold")
        return None

    def grow(self, signals: Signals, factor: int, code: str, why: str) -> Decision:
        """Multiply B by `factor`, capped at the maximum; a capped hold says so."""
        current = signals.global_batch
        target = min(current * factor, self.maximum)
        if target <= current:
            return Decision(current, CAPPED, f"{why}: already at max {self.maximum}")
        return Decision(target, code, f"{why} → {current}→{target}")
