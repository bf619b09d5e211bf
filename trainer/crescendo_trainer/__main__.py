"""`python -m crescendo_trainer [--config job.yaml]`: the built-in trainer under torchrun.

It only wires: `launch` (launch.py) reads the environment and the spec (--config, or
CRESCENDO_SPEC_JSON on a worker pod), and runs the built-in trainer (builtin.py) — the same
library loop a user's own script runs. Exit statuses are launch.py's.
"""

from __future__ import annotations

from crescendo_trainer.builtin import train
from crescendo_trainer.launch import launch

if __name__ == "__main__":
    launch(train, usage=__doc__)
