"""The run trace: one JSON line per completed step and per event, and what it tells.

Part of the contract (docs/contract.md): the trainer's global rank 0 appends to the file named by
CRESCENDO_TRACE_FILE; `crescendo local`, the tests and bench/rescale.py read it. Records are
{"kind": ..., "time": unix seconds, ...}; kinds: step (step, epoch, world, batch, accumulation,
loss, lr, seconds; a step completed just before a peer was lost has loss null and
"unreported": true), resume (step, old_world, world), pause (step, seconds, old_world, world),
decision (step, old, new, code, reason), checkpoint (step, why), eval (step, epoch, accuracy),
stop (step, signal), done (step, accuracy).

A language model's eval and done records carry val_loss (mean validation loss, nats per token)
and perplexity (its exp) instead of accuracy, and its step records count `batch` in sequences
of spec.language.seqLen tokens.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO


class TraceWriter:
    """Appends records; a no-op when there is no file or this process is not the writer."""

    def __init__(self, path: Path | None, enabled: bool) -> None:
        self._handle: TextIO | None = None
        if path is not None and enabled:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = path.open("a", buffering=1)

    def write(self, kind: str, **fields: Any) -> None:
        if self._handle is not None:
            self._handle.write(json.dumps({"kind": kind, "time": time.time(), **fields}) + "\n")

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()


def read_trace(path: Path) -> list[dict[str, Any]]:
    """All complete records (a line being written at the moment is left out)."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # the writer's current line
    return records


@dataclass(frozen=True)
class Restart:
    """One restart of the trainer group, as the trace shows it."""

    resume_step: int  # step restored from the checkpoint
    last_step: int  # highest step completed before the restart
    old_world: int
    world: int
    pause_seconds: float | None  # last step before → first step after (None: none after yet)

    @property
    def lost_steps(self) -> int:
        """Steps done before the restart and done again after it (the trainer's rule too).

        The checkpoint can be one step ahead of the trace: when the tracing rank dies after the
        gradient all-reduce of a step but before its loss all-reduce, a survivor has applied that
        step and saves it, yet no one traced it. Nothing is redone then, so the loss is 0.
        """
        return max(0, self.last_step - self.resume_step)

    @property
    def rescale(self) -> bool:
        return self.old_world != self.world


def restarts(records: list[dict[str, Any]]) -> list[Restart]:
    """Every resume after a first step, with its lost steps and pause."""
    found: list[Restart] = []
    last_step, pending = 0, None
    for record in records:
        kind = record["kind"]
        if kind == "step":
            last_step = max(last_step, record["step"])
        elif kind == "resume" and last_step > 0:
            pending = record, last_step
        elif kind == "pause" and pending is not None:
            resume, before = pending
            found.append(Restart(resume["step"], before, resume["old_world"], resume["world"],
                                 record["seconds"]))
            pending = None
    if pending is not None:
        resume, before = pending
        found.append(Restart(resume["step"], before, resume["old_world"], resume["world"], None))
    return found


def steps_monotonic(records: list[dict[str, Any]]) -> bool:
    """Steps go up by one, except that a resume goes back to its checkpoint's step."""
    expected = None
    for record in records:
        if record["kind"] == "resume":
            expected = record["step"] + 1
        elif record["kind"] == "step":
            if expected is not None and record["step"] != expected:
                return False
            expected = record["step"] + 1
    return True
