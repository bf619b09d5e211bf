"""What the user watches while a local job runs: a live line of progress and the rescales.

On a terminal a rich Live panel is redrawn every tick; elsewhere (CI, a pipe) one plain line is
printed when something changed, at most every few seconds, so logs stay readable.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.text import Text

PLAIN_PERIOD_SECONDS = 5.0


class Display:
    def __init__(self, console: Console) -> None:
        self.console = console
        self._live: Live | None = None
        if console.is_terminal:
            self._live = Live(Text("starting…"), console=console, auto_refresh=False)
            self._live.start()
        self._last_plain = 0.0
        self._last_line = ""

    def update(
        self, status: Mapping[str, Any], step: Mapping[str, Any] | None, rate: float
    ) -> None:
        line = progress_line(status, step, rate)
        if self._live is not None:
            self._live.update(Text(line), refresh=True)
        elif line != self._last_line and time.monotonic() - self._last_plain > PLAIN_PERIOD_SECONDS:
            self.console.print(line, highlight=False)
            self._last_plain, self._last_line = time.monotonic(), line

    def event(self, message: str) -> None:
        self.console.print(f"[bold]{time.strftime('%H:%M:%S')}[/bold] {message}", highlight=False)

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()


def progress_line(status: Mapping[str, Any], step: Mapping[str, Any] | None, rate: float) -> str:
    replicas = f"{status.get('readyReplicas', 0)}/{status.get('replicas', 0)}"
    phase = status.get("phase", "Pending")
    if step is None:
        return f"{phase}: replicas {replicas}, waiting for the first step"
    # A step completed just before a peer was lost is traced without a loss (never agreed).
    loss = "n/a" if step.get("loss") is None else f"{step['loss']:.4f}"
    return (
        f"{phase}: step {step['step']} epoch {step['epoch']} world {step['world']} "
        f"replicas {replicas} batch {step['batch']} loss {loss} {rate:.0f} samples/s"
    )
