"""Where training stands: the counters a restart needs, and the per-step trace and log line.

`Progress` is checkpointed with the model (the per-step trace is crescendo_spec.trace); a field
added later has a default, so older checkpoints keep loading.
Logging, not print: rank 0 logs one progress line every N steps.
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import asdict, dataclass
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
    accuracy: float | None = None
    # Steps redone after restarts so far (lost_steps.py); checkpoints older than it read as 0.
    lost_steps: int = 0

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> Progress:
        return cls(**state)


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


def log_line(progress: Progress, loss: float, lr: float, samples_per_s: float) -> None:
    log.info(
        "step %d epoch %d world %d batch %d loss %.4f lr %.4g samples/s %.0f",
        progress.step,
        progress.epoch,
        progress.world_size,
        progress.global_batch,
        loss,
        lr,
        samples_per_s,
    )


def log_startup(marks: dict[str, float]) -> None:
    """How long each start-up phase took (perf_counter marks in order): a rescale's pause is
    mostly start-up, so this says where it went."""
    items = list(marks.items())
    phases = ", ".join(
        f"{name} {end - start:.2f}" for (_, start), (name, end) in itertools.pairwise(items)
    )
    log.info("start-up %.2f s: %s", items[-1][1] - items[0][1], phases)
