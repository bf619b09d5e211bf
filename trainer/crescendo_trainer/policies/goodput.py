"""`goodput`: B that maximises throughput × statistical efficiency (Pollux, Qiao et al., OSDI'21).

Owns the decision: at each check point, after the cooldown and once the noise scale is offered
(`Signals.measured["noise_scale"]`, the measurement `gns` reads), every candidate B0·factorᵏ ≤
B_max is laid out as the operator and the trainers would run it, its step time predicted by the
throughput model (throughput.py, fitted from the completed steps), and B moves one factor toward
the best candidate when the predicted goodput gain is at least minGain.

Replicas that do not come. The operator gives a batch B′ the replicas
clamp(ceil(B′ / (P·perGpuMax)), min, max); when the cluster has no room for them, the pods are
given back after scaling.scheduleTimeoutSeconds and the trainers go on at the world they have,
accumulating. No channel tells the trainers so, and they need none: the world size every step
reports is the answer. When the world stays below the replicas the current B asks for during
`unschedulableAfterSeconds` of training (default scaling.scheduleTimeoutSeconds +
scaling.cooldownSeconds: the operator's cooldown before the scale-up, then the pods' schedule
timeout; counted as the sum of the measured step times, since `Signals` carries no clock: that
leaves out restarts, so it can only wait longer), the policy caps K at the largest world seen
since and plans every candidate on at most that many replicas. A larger B would then run as
accumulation on the same replicas, which adds little throughput (it only spreads the one
all-reduce a step over more samples), so B stops growing toward replicas that never arrive.
The operator keeps retrying the pods the current B asks for; when the world grows past the cap
by itself, the cap is lifted. The decision reason names the cap while it holds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from crescendo_spec.model import GoodputSettings, Replicas

from crescendo_trainer.batching import step_layout
from crescendo_trainer.policies.base import (
    CAPPED,
    GOODPUT,
    NOISE_SCALE_SIMPLE,
    NOT_FINITE,
    BatchSizePolicy,
    Decision,
    Signals,
)
from crescendo_trainer.throughput import ThroughputModel


@dataclass(frozen=True)
class Candidate:
    """One global batch as it would run, and what the models predict for it."""

    batch: int
    replicas: int  # K: the operator's count, within the cap
    accumulation: int
    step_seconds: float
    goodput: float  # samples per second × statistical efficiency


class GoodputPolicy(BatchSizePolicy):
    """Move B one factor toward the argmax of predicted goodput when it gains ≥ minGain."""

    name = "goodput"

    def __init__(
        self,
        initial: int,
        maximum: int,
        settings: GoodputSettings,
        *,
        per_gpu_max: int,
        replicas: Replicas,
        procs_per_replica: int = 1,
        unschedulable_after_seconds: float,
    ) -> None:
        super().__init__(initial, maximum)
        self.settings = settings
        self.per_gpu_max = per_gpu_max
        self.replica_bounds = replicas
        self.procs_per_replica = procs_per_replica
        self.unschedulable_after_seconds = unschedulable_after_seconds
        self.model = ThroughputModel(settings.sync_prior_seconds, procs_per_replica)
        self.last_change_step = 0
        self.cap: int | None = None  # replicas that could be scheduled, once some did not come
        self.cap_asked = 0  # the replicas asked for when the cap was set, for the reason
        self._short_seconds = 0.0  # training time the world has stayed below the ask
        self._short_largest = 0  # the largest world (replicas) seen in that time

    def measurements(self, step: int, epoch: int, epoch_end: bool) -> frozenset[str]:
        return frozenset({NOISE_SCALE_SIMPLE})

    def asked_replicas(self, batch: int) -> int:
        """The replicas the operator gives `batch`: its rule, mirrored (the trainer does not import
        the operator), `replicas_for_batch` in operator/crescendo_operator/scaling.py. Its P,
        `procs_for_batch`, is the processes per replica except on a GPU job whose
        nprocPerReplica differs from gpusPerReplica, which this model does not cover."""
        needed = math.ceil(batch / (self.procs_per_replica * self.per_gpu_max))
        return max(self.replica_bounds.min, min(self.replica_bounds.max, needed))

    def planned_replicas(self, batch: int) -> int:
        asked = self.asked_replicas(batch)
        return asked if self.cap is None else min(asked, self.cap)

    def batches(self) -> list[int]:
        """The candidates B0·factorᵏ ≤ B_max."""
        out, batch = [], self.initial
        while batch <= self.maximum:
            out.append(batch)
            batch *= self.settings.factor
        return out

    # Goodput (Pollux §3, eq. 4; AdaptDL's `goodput.py`) is the progress per second:
    #     goodput(B) = throughput(B) × E(B),   throughput(B) = B / T_iter(K, m, a)
    # with K, m, a the replicas, micro-batch and accumulation B runs with (the operator's count,
    # `batching.layout` over K·P processes) and T_iter the throughput model's prediction.
    # Statistical efficiency follows McCandlish et al. (arXiv 1812.06162, eq. 2.11): reaching a
    # given loss takes samples E_min·(1 + B/φ) at batch B, φ = B_noise the gradient noise scale,
    # so a sample at B is worth
    #     E(B) = (φ + B0) / (φ + B)
    # of one at B0 (E(B0) = 1). A small φ (B ≫ φ) makes large batches waste samples; a large φ
    # makes E ≈ 1 up to B ≈ φ, and goodput follows throughput. Only ratios of goodput are used.
    def candidate(self, batch: int, noise: float) -> Candidate | None:
        """`batch` laid out as it would run, or None when it cannot be (fewer samples than
        processes)."""
        replicas = self.planned_replicas(batch)
        world = replicas * self.procs_per_replica
        if batch < world:
            return None
        # The noise scale is measured (this policy asks for it): the step the trainer would run.
        plan = step_layout(batch, world, self.per_gpu_max, pairs=True)
        seconds = self.model.predict(world, plan.max_micro, plan.accumulation)
        efficiency = (noise + self.initial) / (noise + batch)
        return Candidate(batch, replicas, plan.accumulation, seconds, batch / seconds * efficiency)

    def decide(self, signals: Signals) -> Decision:
        self._observe(signals)
        refused = self.refuse_not_finite(signals)
        if refused is not None:
            return refused
        if signals.step - self.last_change_step < self.settings.cooldown_steps:
            return self.hold(signals, "cooldown")
        if NOISE_SCALE_SIMPLE not in signals.measured:
            return self.hold(signals, "noise scale not settled yet")
        noise = signals.measured[NOISE_SCALE_SIMPLE]
        if noise <= 0.0:
            return Decision(signals.global_batch, NOT_FINITE, f"φ {noise:.4g} not usable: hold")
        if not self.model.ready:
            return self.hold(signals, "no steady step time measured yet")
        current = self.candidate(signals.global_batch, noise)
        if current is None:
            return self.hold(signals, f"B {signals.global_batch} cannot be laid out")
        return self._choose(signals, current, noise)

    def _choose(self, signals: Signals, current: Candidate, noise: float) -> Decision:
        grid = self.batches()
        allowed = [b for b in grid if b != current.batch
                   and (b > current.batch or self.settings.allow_shrink)]
        pool = [current, *(c for b in allowed if (c := self.candidate(b, noise)) is not None)]
        best = max(pool, key=lambda c: c.goodput)  # on a tie: the current B, then the smallest
        note = self._cap_note()
        where = f"φ {noise:.4g}: "
        if best is current:
            return self._hold_at_best(signals, current, noise, where, note)
        gain = best.goodput / current.goodput - 1.0
        least = self.settings.min_gain
        named = f"best B {best.batch} on {_replicas(best.replicas)}, goodput {gain:+.0%}"
        if gain < least:
            return self.hold(signals, f"{where}{named} < {least:.0%}: hold{note}")
        # Bounded growth: one factor per decision, so an early, noisy φ cannot take B to B_max.
        if best.batch > current.batch:
            step_batch = min(b for b in grid if b > current.batch)
        else:
            step_batch = max(b for b in grid if b < current.batch)
        target = next((c for c in pool if c.batch == step_batch), None)
        if target is None:
            return self.hold(signals, f"{where}{named}, but B {step_batch} cannot be laid out")
        self.last_change_step = signals.step
        return Decision(
            target.batch,
            GOODPUT,
            f"{where}{named} ≥ {least:.0%} → {current.batch}→{target.batch} on "
            f"{_replicas(target.replicas)}{note}",
        )

    def _hold_at_best(
        self, signals: Signals, current: Candidate, noise: float, where: str, note: str
    ) -> Decision:
        """Hold; CAPPED when only batch.max keeps B from a worthwhile next factor."""
        beyond = current.batch * self.settings.factor
        if beyond > self.maximum:
            over = self.candidate(beyond, noise)
            if over is not None and over.goodput / current.goodput - 1.0 >= self.settings.min_gain:
                return Decision(
                    current.batch, CAPPED, f"{where}B {beyond} would gain: already at max "
                    f"{self.maximum}{note}"
                )
        return self.hold(
            signals, f"{where}B {current.batch} on {_replicas(current.replicas)} has the best "
            f"goodput{note}"
        )

    def _cap_note(self) -> str:
        if self.cap is None:
            return ""
        return f" (replicas capped at {self.cap}: {self.cap_asked} asked for, not scheduled)"

    def _observe(self, signals: Signals) -> None:
        """Every step, whatever the decision: feed the throughput model, watch the world."""
        self.model.observe(
            signals.world_size, signals.micro_batch, signals.accumulation, signals.step_seconds
        )
        world = self.model.replicas(signals.world_size)
        asked = self.asked_replicas(signals.global_batch)
        if self.cap is not None and world > self.cap:
            self.cap = None  # the world grew by itself: the cluster has room again
            self._short_seconds, self._short_largest = 0.0, 0
        if world >= asked:
            self._short_seconds, self._short_largest = 0.0, 0
            return
        self._short_largest = max(self._short_largest, world)
        if self.cap is not None:
            return
        if math.isfinite(signals.step_seconds) and signals.step_seconds > 0.0:
            self._short_seconds += signals.step_seconds
        if self._short_seconds >= self.unschedulable_after_seconds:
            self.cap = max(self._short_largest, self.replica_bounds.min)
            self.cap_asked = asked

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "last_change_step": self.last_change_step,
            "throughput": self.model.state_dict(),
            "cap": self.cap,
            "cap_asked": self.cap_asked,
            "short_seconds": self._short_seconds,
            "short_largest": self._short_largest,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.last_change_step = int(state["last_change_step"])
        self.model.load_state_dict(state["throughput"])
        self.cap = None if state["cap"] is None else int(state["cap"])
        self.cap_asked = int(state["cap_asked"])
        self._short_seconds = float(state["short_seconds"])
        self._short_largest = int(state["short_largest"])


def _replicas(count: int) -> str:
    return f"{count} replica" if count == 1 else f"{count} replicas"
