"""The built-in trainer: the library's loop (job.py) around a built-in task (tasks/).

It is written exactly as a user's script is: track the model and optimizer, distribute the
model, give the job its data, then step while the job runs. The task supplies what is specific
to classification or language modelling; the optimizer comes from `spec.optimizer`, at
`learningRate.base` (the job's LR rule multiplies it at every step).
"""

from __future__ import annotations

from crescendo_trainer.job import Job
from crescendo_trainer.optim import Neumann, build_optimizer
from crescendo_trainer.tasks import Task, build_task
from crescendo_trainer.telemetry import Quality


def train(job: Job) -> None:
    task = build_task(job)
    spec = job.spec
    optimizer = build_optimizer(spec.optimizer, task.module.parameters(), spec.learning_rate.base)
    job.track(model=task.module, optimizer=optimizer)
    model = job.distribute(task.module)
    job.telemetry.phase("model")
    task.prepare(job)
    if isinstance(optimizer, Neumann):
        _evaluate_exported(job, optimizer)
    try:
        while job.running:
            if isinstance(optimizer, Neumann):
                optimizer.set_epoch(job.progress.epoch)
            model.train()
            task.begin_step()
            for batch in job.micro_batches():
                task.micro_step(model, batch)
            job.step(optimizer)
    finally:
        task.close()


def _evaluate_exported(job: Job, optimizer: Neumann) -> None:
    """Neumann evaluates (and exports) w − μm, not the displaced iterate w."""
    evaluate, every = job.evaluator, job.eval_every_steps
    assert evaluate is not None  # the task's prepare() set it

    def exported() -> Quality:
        with optimizer.exported_weights():
            return evaluate()

    job.evaluate_with(exported, every)


__all__ = ["Task", "train"]
