"""Batch-size policies by name (`spec.batch.policy`)."""

from __future__ import annotations

from typing import get_args

from crescendo_spec.model import Adversarial, Batch, Replicas, Scaling

from crescendo_trainer.policies.absa import AbsaPolicy, AbsPolicy
from crescendo_trainer.policies.adabatch import AdaBatchPolicy
from crescendo_trainer.policies.base import BatchSizePolicy, Decision, GradientNorms, Signals
from crescendo_trainer.policies.fixed import FixedPolicy
from crescendo_trainer.policies.gns import GnsPolicy
from crescendo_trainer.policies.goodput import GoodputPolicy
from crescendo_trainer.policies.schedule import SchedulePolicy

__all__ = ["BatchSizePolicy", "Decision", "GradientNorms", "Signals", "build_policy"]


def build_policy(
    batch: Batch,
    *,
    epochs: int | None = None,
    adversarial: Adversarial | None = None,
    language_model: bool = False,
    tokens_per_sample: int = 1,
    replicas: Replicas | None = None,
    procs_per_replica: int = 1,
    scaling: Scaling | None = None,
) -> BatchSizePolicy:
    """The policy `batch.policy` names, configured from its settings block.

    `epochs` (the job's budget, when given in epochs) lets ABSA stop its adversarial samples after
    half of them; `adversarial.ratio` is ABSA's starting share r0 (default 0.2).

    `language_model` (`spec.is_language_model`) and `tokens_per_sample` (`spec.language.seq_len`)
    are for `schedule`: pass both always. The policy resolves `batch.schedule.unit: auto` from
    them (tokens for a language model, samples otherwise) and counts `tokens_per_sample` tokens
    per sample only when the unit is tokens, so the unit rule lives in one place
    (`crescendo_spec.schedule.counted_unit`) rather than in every caller.

    `replicas` (`spec.replicas`), `procs_per_replica` (`spec.procs_per_replica`) and `scaling`
    (`spec.scaling`) are for `goodput`, which plans each candidate batch on the replicas the
    operator would give it and waits for them as long as the operator does: pass all three.
    """
    if batch.policy == "fixed":
        return FixedPolicy(batch.initial, batch.max)
    if batch.policy == "adabatch":
        return AdaBatchPolicy(batch.initial, batch.max, batch.adabatch)
    if batch.policy in ("abs", "absa"):
        kind = AbsPolicy if batch.policy == "abs" else AbsaPolicy
        ratio = (adversarial or Adversarial()).ratio
        return kind(
            batch.initial, batch.max, batch.absa, adversarial_ratio=ratio, total_epochs=epochs
        )
    if batch.policy == "gns":
        return GnsPolicy(batch.initial, batch.max, batch.gns)
    if batch.policy == "schedule":
        return SchedulePolicy(
            batch.initial,
            batch.max,
            batch.schedule,
            language_model=language_model,
            tokens_per_sample=tokens_per_sample,
        )
    if batch.policy == "goodput":
        settings = batch.goodput
        return GoodputPolicy(
            batch.initial,
            batch.max,
            settings,
            per_gpu_max=batch.per_gpu_max,
            replicas=replicas or Replicas(),
            procs_per_replica=procs_per_replica,
            unschedulable_after_seconds=settings.unschedulable_wait_seconds(scaling or Scaling()),
        )
    names = ", ".join(get_args(Batch.model_fields["policy"].annotation))
    raise ValueError(f"spec.batch.policy: {batch.policy!r} is not one of {names}")
