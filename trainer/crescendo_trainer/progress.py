"""Where training stands: the counters a restart needs, and the throughput of the log line.

`Progress` is a checkpoint component (state.py); a field added later has a default, so older
checkpoints keep loading. The facts of each step go to the telemetry sink (telemetry.py).
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

log = logging.getLogger("crescendo_trainer")


@dataclass
class Progress:
    global_batch: int
    step: int = 0  # optimizer steps completed
    epoch: int = 0
    position: int = 0  # samples of this epoch's permutation consumed
    samples_seen: int = 0  # for reading a checkpoint; the exporter counts per process
    world_size: int = 1  # world size of the last completed step
    last_step_time: float = 0.0  # wall clock of the last completed step (pause measurement)
    # The last evaluation's quality ({"accuracy": …} or {"val_loss": …, "perplexity": …}).
    quality: dict[str, float] = field(default_factory=dict)
    evaluated_step: int = -1  # the step it was taken at
    # Steps redone after restarts so far (lost_steps.py); checkpoints older than it read as 0.
    lost_steps: int = 0

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """In place: the job and its components hold this object."""
        known = {f.name for f in fields(self)}
        for name, value in state.items():
            if name in known:
                setattr(self, name, value)

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> Progress:
        progress = cls(global_batch=int(state["global_batch"]))
        progress.load_state_dict(state)
        return progress


class Throughput:
    """Samples per second over the last logging period."""

    def __init__(self) -> None:
        self._since = time.perf_counter()
        self._samples = 0

    def add(self, samples: int) -> None:
        self._samples += samples

    def take(self) -> float:
        now = time.perf_counter()
        rate = self._samples / max(now - self._since, 1e-9)
        self._since, self._samples = now, 0
        return rate


def log_startup(marks: dict[str, float]) -> None:
    """How long each start-up phase took (perf_counter marks in order): a rescale's pause is
    mostly start-up, so this says where it went."""
    items = list(marks.items())
    phases = ", ".join(
        f"{name} {end - start:.2f}" for (_, start), (name, end) in itertools.pairwise(items)
    )
    log.info("start-up %.2f s: %s", items[-1][1] - items[0][1], phases)
