"""Graceful stop: SIGTERM (torchrun restarts, pod deletion) and SIGINT set a flag.

The training loop checks the flag after every step, agrees with its peers on it (one scalar
all-reduce, so every rank stops after the same step), checkpoints and exits. Python runs signal
handlers between bytecodes on the main thread, so the step in flight always finishes.
"""

from __future__ import annotations

import signal
from types import FrameType


class StopFlag:
    def __init__(self) -> None:
        self.signal_name: str | None = None

    @property
    def raised(self) -> bool:
        return self.signal_name is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signal_name = signal.Signals(signum).name

    def install(self) -> StopFlag:
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, self._handle)
        return self
