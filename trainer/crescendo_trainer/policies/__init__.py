"""Batch-size policies by name (`spec.batch.policy`)."""

from __future__ import annotations

from crescendo_spec.model import Batch

from crescendo_trainer.policies.adabatch import AdaBatchPolicy
from crescendo_trainer.policies.base import BatchSizePolicy, Decision, Signals
from crescendo_trainer.policies.fixed import FixedPolicy

__all__ = ["BatchSizePolicy", "Decision", "Signals", "build_policy"]


def build_policy(batch: Batch) -> BatchSizePolicy:
    """The policy `batch.policy` names, configured from its settings block."""
    if batch.policy == "fixed":
        return FixedPolicy(batch.initial, batch.max)
    if batch.policy == "adabatch":
        return AdaBatchPolicy(batch.initial, batch.max, batch.adabatch)
    raise ValueError(
        f"spec.batch.policy: {batch.policy!r} is not implemented yet (have: fixed, adabatch)"
    )
