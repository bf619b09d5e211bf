"""The one way measurements reach a batch-size policy: asked for, taken here, handed in `Signals`.

A policy says, at each check point, which measurements its decision needs
(`BatchSizePolicy.measurements`); this module takes them and returns {name: value}, which the job
passes as `Signals.measured` and to the telemetry sink. Two kinds exist:
- the gradient noise scale (noise.py): fed every step from the gradients (a DDP communication
  hook under several workers; the step's micro-batches, at the same weights, with one), offered
  once the estimate has settled;
- the Hessian's top eigenvalue and, for the dashboard, its Hutchinson trace (hessian.py), taken
  on demand through a loss closure: the model, a loss function of (outputs, targets) and one
  fixed batch that is the same on every rank. The built-in tasks supply theirs; a user's script
  passes its own (`Job.measure_curvature_with`).
The noise estimate is restart state (a component of the checkpoint); the curvature is not.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from crescendo_spec.model import Batch
from torch import Tensor, nn

from crescendo_trainer import distributed
from crescendo_trainer.hessian import LossFn, hutchinson_trace, measure_top_eigenvalue
from crescendo_trainer.noise import GnsCommHook, MicroBatchNorms, NoiseScaleEstimator
from crescendo_trainer.policies.base import (
    HESSIAN_EIGENVALUE,
    HESSIAN_TRACE,
    NOISE_SCALE_SIMPLE,
    BatchSizePolicy,
    GradientNorms,
)

TRACE_SAMPLES = 10  # Hutchinson probes for the dashboard's trace: a trend, not a decision
# Estimates before the noise scale is offered, at least: a handful of steps' EMA is too noisy to
# act on. The EMA's own horizon counts too (settle_count).
MIN_OBSERVATIONS = 10


def settle_count(ema: float) -> int:
    """Observations before the estimate is offered: two EMA horizons 1/(1 − ema) (40 at the
    default 0.95, when the first observation's weight has fallen to e⁻² ≈ 14 %), at least
    MIN_OBSERVATIONS."""
    return max(MIN_OBSERVATIONS, round(2.0 / (1.0 - ema)))


@dataclass(frozen=True)
class CurvatureProbe:
    """What the Hessian is measured on: `loss_fn(model(inputs), targets)`, one fixed batch."""

    model: nn.Module
    loss_fn: LossFn
    inputs: Tensor
    targets: Tensor


class Measurements:
    def __init__(self, policy: BatchSizePolicy, batch: Batch) -> None:
        self.policy, self.settings = policy, batch
        self.noise = NoiseScaleEstimator(batch.gns.ema)
        self.hook: GnsCommHook | None = None
        self.micro = MicroBatchNorms()
        self.settled_after = settle_count(batch.gns.ema)
        self.probe: CurvatureProbe | None = None
        # A policy that measures the noise scale asks for it at every check point, so once is
        # enough to know: the step path reads this flag, not the policy.
        self.wants_noise = NOISE_SCALE_SIMPLE in policy.measurements(0, 0, False)


    def attach(self, ddp: nn.parallel.DistributedDataParallel) -> None:
        """Under DDP: read each rank's |g_b|² as the gradient buckets are all-reduced."""
        if self.wants_noise:
            self.hook = GnsCommHook()
            ddp.register_comm_hook(self.hook, GnsCommHook.hook)

    @property
    def splits_steps(self) -> bool:
        """Whether one worker's steps must have ≥ 2 micro-batches (the noise scale's pairs)."""
        return self.wants_noise and not distributed.active()

    def after_micro(self, params: Sequence[Tensor], size: int, global_batch: int) -> None:
        """After each micro-batch's backward (one worker: the gradient so far, same weights)."""
        if self.splits_steps:
            self.micro.after_micro([p.grad for p in params if p.grad is not None], size,
                                   global_batch)

    def observe_gradients(self, params: Sequence[Tensor], local: int, global_batch: int) -> None:
        """After the step's backward, before the optimizer step (the one extra all-reduce)."""
        if not self.wants_noise:
            return
        if self.hook is not None and distributed.active():
            norms: GradientNorms | None = self.hook.norms(params, local, global_batch)
        else:
            norms = self.micro.step_norms(global_batch)
        if norms is not None:
            self.noise.update(norms)

    def take(self, step: int, epoch: int, epoch_end: bool) -> dict[str, float]:
        """The measurements the policy asks for at this check point (the same on every rank)."""
        wanted = self.policy.measurements(step, epoch, epoch_end)
        measured: dict[str, float] = {}
        if NOISE_SCALE_SIMPLE in wanted and self.noise.count >= self.settled_after:
            measured[NOISE_SCALE_SIMPLE] = self.noise.b_simple
        if HESSIAN_EIGENVALUE in wanted:
            measured.update(self.curvature(self.settings, seed=epoch))
        return measured

    def curvature(self, batch: Batch, seed: int) -> dict[str, float]:
        if self.probe is None:
            raise ValueError(
                f"batch.policy {batch.policy!r} measures the Hessian: give the job a loss closure "
                "(Job.measure_curvature_with(loss_fn, inputs, targets))"
            )
        # The probe holds `hessianBatches` batches of `hessianBatch` samples: λ is the mean of
        # their top eigenvalues (each in eval mode: under BatchNorm this is the eval-mode λ, as
        # in HessianFlow, 2–4× the train-mode value once trained); the trace, a dashboard
        # trend, is taken on the first.
        probe, parts = self.probe, batch.absa.hessian_batches
        values = [
            measure_top_eigenvalue(probe.model, probe.loss_fn, x, y, batch.absa, seed=seed).value
            for x, y in zip(probe.inputs.chunk(parts), probe.targets.chunk(parts), strict=True)
        ]
        first_x, first_y = probe.inputs.chunk(parts)[0], probe.targets.chunk(parts)[0]
        trace = hutchinson_trace(probe.model, probe.loss_fn, first_x, first_y,
                                 samples=TRACE_SAMPLES, seed=seed)
        return {HESSIAN_EIGENVALUE: sum(values) / len(values), HESSIAN_TRACE: trace}

    # The noise estimate is a checkpoint component ("noise").
    def state_dict(self) -> dict[str, Any]:
        return self.noise.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.noise.load_state_dict(state)
