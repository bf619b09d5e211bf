"""The measurements a batch-size policy asks for, taken on the trainer's model and data.

Owns the wiring between a policy's `measurements()` / `wants_gradient_norms()` and the
algorithms: the Hessian's top eigenvalue (and, alongside it for the dashboard, its Hutchinson
trace) on one seeded batch that is the same on every rank (hessian.py broadcasts rank 0's value),
and the per-step squared gradient norms of the noise-scale estimate (policies/gns.py), from a DDP
communication hook when there are several workers and from consecutive steps when there is one.
"""

from __future__ import annotations

from collections.abc import Sequence

from crescendo_spec.model import AbsaSettings
from torch import Tensor, nn

from crescendo_trainer import distributed
from crescendo_trainer.hessian import hutchinson_trace, measure_top_eigenvalue, seeded_batch
from crescendo_trainer.policies.base import (
    HESSIAN_EIGENVALUE,
    HESSIAN_TRACE,
    BatchSizePolicy,
    GradientNorms,
)
from crescendo_trainer.policies.gns import GnsCommHook, SingleWorkerNorms

TRACE_SAMPLES = 10  # Hutchinson probes for the dashboard's trace: a trend, not a decision


def curvature(
    model: nn.Module,
    inputs: Tensor,
    targets: Tensor,
    settings: AbsaSettings,
    seed: int,
    epoch: int,
) -> dict[str, float]:
    """λ_max and tr(H) on `settings.hessianBatch` samples chosen by `seed` (same on all ranks)."""
    x, y = seeded_batch(inputs, targets, settings.hessian_batch, seed=seed)
    device = next(model.parameters()).device
    x, y = x.to(device), y.to(device)
    loss = nn.functional.cross_entropy
    eigen = measure_top_eigenvalue(model, loss, x, y, settings, seed=epoch)
    trace = hutchinson_trace(model, loss, x, y, samples=TRACE_SAMPLES, seed=epoch)
    return {HESSIAN_EIGENVALUE: eigen.value, HESSIAN_TRACE: trace}


class GradientNoise:
    """Hands the policy one `GradientNorms` per step (every second step with one worker)."""

    def __init__(self, policy: BatchSizePolicy) -> None:
        self.policy = policy
        self.hook: GnsCommHook | None = None
        self.single = SingleWorkerNorms()

    @property
    def wanted(self) -> bool:
        return self.policy.wants_gradient_norms()

    def attach(self, ddp: nn.parallel.DistributedDataParallel) -> None:
        """Under DDP: read each rank's |g_b|² as the gradient buckets are all-reduced."""
        if self.wanted:
            self.hook = GnsCommHook()
            ddp.register_comm_hook(self.hook, GnsCommHook.hook)

    def observe(self, params: Sequence[Tensor], local_batch: int, global_batch: int) -> None:
        """After backward, before the optimizer step (the one extra scalar all-reduce)."""
        if not self.wanted:
            return
        if self.hook is not None and distributed.active():
            norms: GradientNorms | None = self.hook.norms(params, local_batch, global_batch)
        else:
            grads = [p.grad for p in params if p.grad is not None]
            norms = self.single.observe(grads, global_batch)
        if norms is not None:
            self.policy.observe_gradient_norms(norms)
