"""The built-in tasks, by what the spec names: image classification or causal language modelling.

A task owns its model, data, micro-step and quality; the loop around it is the library's
(builtin.py). `build_task` is the only place that tells the two apart.
"""

from __future__ import annotations

from typing import Any, Protocol

from torch import nn

from crescendo_trainer.job import Job


class Task(Protocol):
    @property
    def module(self) -> nn.Module: ...

    def prepare(self, job: Job) -> None: ...

    def begin_step(self) -> None: ...

    def micro_step(self, model: nn.Module, batch: Any) -> None: ...

    def close(self) -> None: ...


def build_task(job: Job) -> Task:
    if job.spec.is_language_model:
        from crescendo_trainer.tasks.language import Language

        return Language(job.spec, job)
    from crescendo_trainer.tasks.classification import Classification

    return Classification(job.spec, job)
