"""Crescendo's data plane: the elastic trainer library, and the built-in trainer written on it.

A user's torchrun script needs three names (job.py says how they fit together):

    from crescendo_trainer import Job, launch

    def main(job: Job) -> None: ...   # track, distribute, loader, then `while job.running:`
    launch(main)

`Job` gives the global batch the policy chose, this rank's micro-batches of any map-style
Dataset (resuming by global sample index at any world size), the LR rule on the script's own
optimizer, checkpoints of every tracked component with zero lost steps per rescale, and the
exporter, the run trace and the policy measurements. The built-in trainer
(`python -m crescendo_trainer`, builtin.py) is the same loop around a built-in task.
"""

from crescendo_trainer.job import Job, MicroBatch, Outcome, StepReport
from crescendo_trainer.launch import launch, run

__all__ = ["Job", "MicroBatch", "Outcome", "StepReport", "launch", "run"]
