"""A job's restart: the newest good checkpoint into its components, and the steps it cost.

All ranks read the shared checkpoint directory. The newest loadable checkpoint (checkpoint.py:
digest-checked, a damaged newest one skipped for the previous) is handed to the state registry,
which refuses a checkpoint of other components, naming them, before it restores anything. Then
the steps the previous run had completed beyond that checkpoint (the high-water record,
lost_steps.py) are added to the total the checkpoint carried. Files but none loadable is a
CheckpointError: never a silent restart at step 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from crescendo_trainer import checkpoint, high_water
from crescendo_trainer.lost_steps import LostSteps, count_lost_steps
from crescendo_trainer.progress import Progress
from crescendo_trainer.state import StateError, StateRegistry


@dataclass(frozen=True)
class Restart:
    checkpoint: Path | None  # the file restored; None: no checkpoint, step 0
    lost: LostSteps


def restore(state: StateRegistry, progress: Progress, directory: Path) -> Restart:
    """Restore `state` (which holds `progress`) from `directory` and count the lost steps into
    `progress.lost_steps`."""
    loaded = checkpoint.load_latest(directory)
    path = None
    if loaded is not None:
        try:
            state.load_state_dict(loaded.payload)
        except StateError as exc:
            raise checkpoint.CheckpointError(f"{loaded.path}: {exc}") from None
        path = loaded.path
    lost = count_lost_steps(high_water.read(directory), progress.step, progress.lost_steps)
    progress.lost_steps = lost.total
    return Restart(path, lost)
