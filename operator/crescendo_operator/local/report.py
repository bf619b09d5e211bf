"""What a finished (or interrupted) local run tells: the summary table and the plot.

Both are read from the run trace (crescendo_spec.trace), the trainers' own record of every
step, decision, evaluation and restart, so the figures are the trainers', not the controller's
guesses. The plot is a PNG in the run directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crescendo_spec.trace import Restart, restarts, steps_monotonic
from rich.table import Table


@dataclass(frozen=True)
class Summary:
    steps: int
    epochs: int
    wall_seconds: float
    final_accuracy: float | None
    final_batch: int | None
    rescales: list[Restart]
    decisions: list[str]
    monotonic: bool

    @property
    def lost_steps(self) -> int:
        return sum(r.lost_steps for r in self.rescales)


def summarize(records: list[dict[str, Any]], wall_seconds: float) -> Summary:
    steps = [r for r in records if r["kind"] == "step"]
    evals = [r for r in records if r["kind"] in ("eval", "done") and r.get("accuracy") is not None]
    return Summary(
        steps=steps[-1]["step"] if steps else 0,
        epochs=steps[-1]["epoch"] + 1 if steps else 0,
        wall_seconds=wall_seconds,
        final_accuracy=evals[-1]["accuracy"] if evals else None,
        final_batch=steps[-1]["batch"] if steps else None,
        rescales=[r for r in restarts(records) if r.rescale],
        decisions=[r["reason"] for r in records if r["kind"] == "decision"],
        monotonic=steps_monotonic(records),
    )


def summary_table(summary: Summary) -> Table:
    table = Table(title="crescendo local: summary", show_header=False)
    accuracy = "n/a" if summary.final_accuracy is None else f"{summary.final_accuracy:.2%}"
    table.add_row("optimizer steps", str(summary.steps))
    table.add_row("epochs", str(summary.epochs))
    table.add_row("wall time", f"{summary.wall_seconds:.1f} s")
    table.add_row("final test accuracy", accuracy)
    table.add_row("final global batch", str(summary.final_batch))
    table.add_row("batch decisions", "\n".join(summary.decisions) or "none")
    for r in summary.rescales:
        pause = "n/a" if r.pause_seconds is None else f"{r.pause_seconds:.1f} s"
        table.add_row(
            f"rescale {r.old_world}→{r.world} at step {r.resume_step}",
            f"pause {pause}, lost steps {r.lost_steps}",
        )
    table.add_row("lost steps (all rescales)", str(summary.lost_steps))
    return table


def plot(records: list[dict[str, Any]], path: Path, procs_per_replica: int) -> Path:
    """Global batch, replicas, loss, accuracy and λ / noise scale over steps, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r for r in records if r["kind"] == "step"]
    evals = [r for r in records if r["kind"] == "eval"]
    measures = [r for r in records if r["kind"] == "measure"]
    x = [r["step"] for r in steps]
    fig, axes = plt.subplots(4, 1, figsize=(9, 11), sharex=True)
    axes[0].step(x, [r["batch"] for r in steps], where="post", label="global batch")
    axes[0].set_ylabel("global batch")
    twin = axes[0].twinx()
    twin.step(x, [r["world"] / procs_per_replica for r in steps], where="post", color="tab:red",
              label="replicas")
    twin.set_ylabel("replicas", color="tab:red")
    losses = [r for r in steps if r.get("loss") is not None]  # a peer-lost step has none
    axes[1].plot([r["step"] for r in losses], [r["loss"] for r in losses], linewidth=0.8)
    axes[1].set_ylabel("training loss")
    axes[1].set_yscale("log")
    axes[2].plot([r["step"] for r in evals], [r["accuracy"] for r in evals], marker="o")
    axes[2].set_ylabel("test accuracy")
    names = sorted({r["name"] for r in measures})
    for name in names:
        points = [r for r in measures if r["name"] == name]
        axes[3].plot([r["step"] for r in points], [r["value"] for r in points], marker=".",
                     label=name)
    if names:
        axes[3].legend()
    else:
        axes[3].text(0.5, 0.5, "this policy measures no curvature or noise scale",
                     ha="center", va="center", transform=axes[3].transAxes)
    axes[3].set_ylabel("λ / noise scale")
    axes[3].set_xlabel("optimizer step")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
