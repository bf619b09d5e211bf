"""What a finished (or interrupted) local run tells: the summary table and the plot.

Both are read from the run trace (crescendo_spec.trace), the trainers' own record of every
step, decision, evaluation and restart, so the figures are the trainers', not the controller's
guesses. The plot is a PNG in the run directory.

The model's quality is what its evaluations carry: test accuracy for classification, validation
loss and perplexity for a language model (its eval records have `val_loss` instead of
`accuracy`). The choice is read from the records, so a trace says by itself what it measured.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crescendo_spec.trace import Restart, restarts, steps_monotonic
from rich.table import Table

# The two quality fields an eval or done record can carry (crescendo_spec.trace).
QUALITY_FIELDS = ("accuracy", "val_loss")


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
    final_val_loss: float | None = None  # nats per token (language models)
    final_perplexity: float | None = None
    tokens_per_sample: int | None = None  # a language model's sequence length

    @property
    def lost_steps(self) -> int:
        return sum(r.lost_steps for r in self.rescales)

    @property
    def language_model(self) -> bool:
        """Whether the quality is a validation loss (also before the first evaluation)."""
        return self.final_val_loss is not None or self.tokens_per_sample is not None


def evaluated(records: list[dict[str, Any]], kinds: tuple[str, ...]) -> list[dict[str, Any]]:
    """The records of these kinds that carry a quality figure."""
    return [
        r for r in records
        if r["kind"] in kinds and any(r.get(name) is not None for name in QUALITY_FIELDS)
    ]


def summarize(
    records: list[dict[str, Any]], wall_seconds: float, tokens_per_sample: int | None = None
) -> Summary:
    """The run's figures; `tokens_per_sample` (a language model's sequence length) turns the
    batch's sequences into tokens as well."""
    steps = [r for r in records if r["kind"] == "step"]
    evals = evaluated(records, ("eval", "done"))
    last = evals[-1] if evals else {}
    return Summary(
        steps=steps[-1]["step"] if steps else 0,
        epochs=steps[-1]["epoch"] + 1 if steps else 0,
        wall_seconds=wall_seconds,
        final_accuracy=last.get("accuracy"),
        final_batch=steps[-1]["batch"] if steps else None,
        rescales=[r for r in restarts(records) if r.rescale],
        decisions=[r["reason"] for r in records if r["kind"] == "decision"],
        monotonic=steps_monotonic(records),
        final_val_loss=last.get("val_loss"),
        final_perplexity=last.get("perplexity"),
        tokens_per_sample=tokens_per_sample,
    )


def _figure(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def batch_text(summary: Summary) -> str:
    """The last global batch: samples, or for a language model sequences and their tokens."""
    if summary.final_batch is None:
        return "n/a"
    if summary.tokens_per_sample is None:
        return str(summary.final_batch)
    tokens = summary.final_batch * summary.tokens_per_sample
    return f"{summary.final_batch:,} sequences ({tokens:,} tokens)"


def summary_table(summary: Summary) -> Table:
    table = Table(title="crescendo local: summary", show_header=False)
    table.add_row("optimizer steps", str(summary.steps))
    table.add_row("epochs", str(summary.epochs))
    table.add_row("wall time", f"{summary.wall_seconds:.1f} s")
    if summary.language_model:
        table.add_row("final validation loss", _figure(summary.final_val_loss, ".4f"))
        table.add_row("final perplexity", _figure(summary.final_perplexity, ",.2f"))
    else:
        table.add_row("final test accuracy", _figure(summary.final_accuracy, ".2%"))
    table.add_row("final global batch", batch_text(summary))
    table.add_row("batch decisions", "\n".join(summary.decisions) or "none")
    for r in summary.rescales:
        pause = "n/a" if r.pause_seconds is None else f"{r.pause_seconds:.1f} s"
        table.add_row(
            f"rescale {r.old_world}→{r.world} at step {r.resume_step}",
            f"pause {pause}, lost steps {r.lost_steps}",
        )
    table.add_row("lost steps (all rescales)", str(summary.lost_steps))
    return table


@dataclass(frozen=True)
class Panel:
    """One panel of the plot: its axis label and its curves, (steps, values) by legend name."""

    ylabel: str
    curves: dict[str, tuple[list[int], list[float]]] = field(default_factory=dict)
    marker: str = ""
    legend: bool = False
    note: str = ""  # shown instead of curves when there are none


def _curve(records: list[dict[str, Any]], name: str) -> tuple[list[int], list[float]]:
    points = [r for r in records if r.get(name) is not None]
    return [r["step"] for r in points], [r[name] for r in points]


def quality_panel(records: list[dict[str, Any]]) -> Panel:
    """Validation loss for a language model, test accuracy otherwise, at every evaluation."""
    evals = evaluated(records, ("eval",))
    if any(r.get("val_loss") is not None for r in evals):
        curve = _curve(evals, "val_loss")
        return Panel("validation loss (nats/token)", {"validation loss": curve}, marker="o")
    return Panel("test accuracy", {"test accuracy": _curve(evals, "accuracy")}, marker="o")


def measure_panel(records: list[dict[str, Any]]) -> Panel:
    """λ / noise scale when the policy measures them; else the learning rate, whose warm-up,
    decay and batch scaling are then the most telling thing this space can show."""
    measures = [r for r in records if r["kind"] == "measure"]
    names = sorted({r["name"] for r in measures})
    if names:
        curves = {n: _curve([r for r in measures if r["name"] == n], "value") for n in names}
        return Panel("λ / noise scale", curves, marker=".", legend=True)
    lr = _curve([r for r in records if r["kind"] == "step"], "lr")
    if lr[0]:
        return Panel("learning rate", {"learning rate": lr})
    return Panel("λ / noise scale", note="this policy measures no curvature or noise scale")


def plot(records: list[dict[str, Any]], path: Path, procs_per_replica: int) -> Path:
    """Global batch, replicas, loss, model quality and λ / noise scale (or the learning rate)
    over steps, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r for r in records if r["kind"] == "step"]
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
    for ax, panel in zip(axes[2:], (quality_panel(records), measure_panel(records)), strict=True):
        for name, (xs, ys) in panel.curves.items():
            ax.plot(xs, ys, marker=panel.marker, label=name)
        if panel.legend:
            ax.legend()
        if panel.note:
            ax.text(0.5, 0.5, panel.note, ha="center", va="center", transform=ax.transAxes)
        ax.set_ylabel(panel.ylabel)
    axes[3].set_xlabel("optimizer step")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
