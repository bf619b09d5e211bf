"""A job against its fixed-B0 baseline: what growing the batch gained (`--baseline`).

Owns the baseline's spec, the comparison of the two runs' traces (crescendo_spec.trace), and the
comparison's table, JSON and plot. Everything but the plot is a pure function of trace records.

The target is the baseline's final quality (its last eval or done record). For each run: the
optimizer steps, samples and wall time to its first evaluation at or beyond the target
(accuracy at or above it, validation loss at or below it), and the ratios baseline ÷ policy of
those three (above 1: the policy got there with less). The baseline reaches its own final
quality by construction; a policy may not, and then says "not reached" and has no ratios.

Wall time counts from the start of each `crescendo local` invocation that ran the job (the
run directory's sessions.jsonl), so start-up and the policy's rescale pauses are in it, and it
leaves out the time between invocations (stopped by Ctrl-C, then `--resume`): the trace alone
cannot tell that gap from a rescale, which also stops the trainers and resumes them. Samples
count every traced step, steps redone after a rescale included: they were computed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from crescendo_spec.model import JobSpec
from rich.table import Table

from crescendo_operator.local.report import evaluated, summarize

Records = list[dict[str, Any]]
EVALUATIONS = ("eval", "done")


def baseline_spec(spec: JobSpec) -> JobSpec:
    """The job's fixed-B0 baseline: its spec with batch.policy fixed, nothing else changed.

    B stays batch.initial, so the controller keeps ceil(B0 / perGpuMax) replicas; data, model,
    budget, learning rate (and its batch scaling, a no-op at B0) and seed are the job's, so any
    difference is the policy's. An ABSA job's baseline trains without ABSA's FGSM samples: they
    are part of that policy.
    """
    return spec.model_copy(update={"batch": spec.batch.model_copy(update={"policy": "fixed"})})


def baseline_label(spec: JobSpec) -> str:
    return f"fixed B0={spec.batch.initial}"


@dataclass(frozen=True)
class Quality:
    """The figure an evaluation measures the model by, and which way is better."""

    field: str  # the eval record's field (crescendo_spec.trace)
    label: str
    higher_is_better: bool

    def reaches(self, value: float, target: float) -> bool:
        return value >= target if self.higher_is_better else value <= target

    def text(self, value: float | None) -> str:
        if value is None:
            return "n/a"
        return f"{value:.2%}" if self.field == "accuracy" else f"{value:.4f}"


ACCURACY = Quality("accuracy", "test accuracy", higher_is_better=True)
VAL_LOSS = Quality("val_loss", "validation loss", higher_is_better=False)


@dataclass(frozen=True)
class RunTrace:
    """One run to compare: its name in the table, its trace and its invocations' starts."""

    label: str
    records: Records
    starts: Sequence[float] = ()  # Unix seconds; none known: the first record starts it


def quality_of(records: Records) -> Quality:
    """Validation loss when the evaluations carry it (a language model), else accuracy."""
    evals = evaluated(records, EVALUATIONS)
    return VAL_LOSS if any(r.get("val_loss") is not None for r in evals) else ACCURACY


@dataclass(frozen=True)
class ToTarget:
    """Where a run first reached the target."""

    steps: int
    samples: int
    wall_seconds: float


@dataclass(frozen=True)
class RunFigures:
    """One run of the comparison, whole and to the target."""

    label: str
    steps: int
    samples: int
    wall_seconds: float
    final_quality: float | None
    final_batch: int | None
    rescales: int
    lost_steps: int
    to_target: ToTarget | None  # None: never reached


@dataclass(frozen=True)
class Comparison:
    quality: Quality
    target: float  # the baseline's final quality
    policy: RunFigures
    baseline: RunFigures

    @property
    def ratios(self) -> dict[str, float | None]:
        """Baseline ÷ policy to the target (None where the policy did not reach it)."""
        p, b = self.policy.to_target, self.baseline.to_target
        if p is None or b is None:
            return {"steps": None, "samples": None, "wall_seconds": None}
        return {
            "steps": _ratio(b.steps, p.steps),
            "samples": _ratio(b.samples, p.samples),
            "wall_seconds": _ratio(b.wall_seconds, p.wall_seconds),
        }


def _ratio(baseline: float, policy: float) -> float | None:
    return baseline / policy if policy > 0 else None


def wall_seconds(records: Records, starts: Sequence[float] = ()) -> list[float]:
    """The wall time at each record: from its invocation's start, plus the invocations before
    it (each up to its last record). Without starts, the first record is the only start."""
    begins = sorted(starts) or ([records[0]["time"]] if records else [])
    elapsed: list[float] = []
    closed, session, last = 0.0, 0, None  # earlier invocations' total; this one; its last time
    for record in records:
        while session + 1 < len(begins) and record["time"] >= begins[session + 1]:
            closed += 0.0 if last is None else max(0.0, last - begins[session])
            session, last = session + 1, None
        elapsed.append(closed + max(0.0, record["time"] - begins[session]))
        last = record["time"]
    return elapsed


def figures(run: RunTrace, quality: Quality, target: float) -> RunFigures:
    records = run.records
    summary = summarize(records, 0.0)
    elapsed = wall_seconds(records, run.starts)
    samples, to_target = 0, None
    for record, seconds in zip(records, elapsed, strict=True):
        if record["kind"] == "step":
            samples += record["batch"]
        value = record.get(quality.field) if record["kind"] in EVALUATIONS else None
        if to_target is None and value is not None and quality.reaches(value, target):
            to_target = ToTarget(record["step"], samples, seconds)
    final = summary.final_val_loss if quality is VAL_LOSS else summary.final_accuracy
    return RunFigures(
        label=run.label,
        steps=summary.steps,
        samples=samples,
        wall_seconds=elapsed[-1] if elapsed else 0.0,
        final_quality=final,
        final_batch=summary.final_batch,
        rescales=len(summary.rescales),
        lost_steps=summary.lost_steps,
        to_target=to_target,
    )


def compare(policy: RunTrace, baseline: RunTrace) -> Comparison:
    """The two runs to the baseline's final quality; ValueError if the baseline has none."""
    quality = quality_of(baseline.records)
    finals = [r for r in evaluated(baseline.records, EVALUATIONS)
              if r.get(quality.field) is not None]
    if not finals:
        raise ValueError("the baseline run has no evaluation: there is no quality to compare to")
    target = float(finals[-1][quality.field])
    return Comparison(
        quality=quality,
        target=target,
        policy=figures(policy, quality, target),
        baseline=figures(baseline, quality, target),
    )


def comparison_json(comparison: Comparison) -> dict[str, Any]:
    """comparison.json: the quality, its target, both runs' figures and the ratios."""
    return {
        "quality": comparison.quality.field,
        "higher_is_better": comparison.quality.higher_is_better,
        "target": comparison.target,
        "policy": asdict(comparison.policy),
        "baseline": asdict(comparison.baseline),
        "ratios_baseline_over_policy": comparison.ratios,
    }


def _times(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}×"


def _reached(run: RunFigures) -> tuple[str, str, str]:
    if run.to_target is None:
        return ("not reached",) * 3
    t = run.to_target
    return str(t.steps), f"{t.samples:,}", f"{t.wall_seconds:.1f} s"


def comparison_table(comparison: Comparison) -> Table:
    c, quality = comparison, comparison.quality
    samples = "sequences" if quality is VAL_LOSS else "samples"
    table = Table(title="crescendo local: the policy against its fixed-B0 baseline")
    table.caption = (
        f"target: the baseline's final {quality.label}, {quality.text(c.target)} (reached: the "
        f"first evaluation at or {'above' if quality.higher_is_better else 'below'} it)"
    )
    for header in ("", c.policy.label, c.baseline.label, "baseline ÷ policy"):
        table.add_column(header, justify="left" if not header else "right")
    ratios = c.ratios
    policy, baseline = _reached(c.policy), _reached(c.baseline)
    for n, (what, key) in enumerate(
        (("optimizer steps", "steps"), (samples, "samples"), ("wall time", "wall_seconds"))
    ):
        table.add_row(f"{what} to target", policy[n], baseline[n], _times(ratios[key]))
    cells: list[tuple[str, Callable[[RunFigures], str]]] = [
        (f"final {quality.label}", lambda r: quality.text(r.final_quality)),
        ("optimizer steps (whole run)", lambda r: str(r.steps)),
        (f"{samples} (whole run)", lambda r: f"{r.samples:,}"),
        ("wall time (whole run)", lambda r: f"{r.wall_seconds:.1f} s"),
        ("final global batch", lambda r: "n/a" if r.final_batch is None else str(r.final_batch)),
        ("rescales", lambda r: str(r.rescales)),
        ("lost steps", lambda r: str(r.lost_steps)),
    ]
    for label, cell in cells:
        table.add_row(label, cell(c.policy), cell(c.baseline), "")
    return table


Curve = tuple[list[float], list[float]]


@dataclass(frozen=True)
class Curves:
    """One run's lines in comparison.png."""

    quality_by_step: Curve
    quality_by_time: Curve
    batch_by_time: Curve
    replicas_by_time: Curve


def curves(run: RunTrace, quality: Quality, procs_per_replica: int) -> Curves:
    records = run.records
    elapsed = wall_seconds(records, run.starts)
    evals = [(r, t) for r, t in zip(records, elapsed, strict=True)
             if r["kind"] == "eval" and r.get(quality.field) is not None]
    steps = [(r, t) for r, t in zip(records, elapsed, strict=True) if r["kind"] == "step"]
    return Curves(
        quality_by_step=([r["step"] for r, _ in evals], [r[quality.field] for r, _ in evals]),
        quality_by_time=([t for _, t in evals], [r[quality.field] for r, _ in evals]),
        batch_by_time=([t for _, t in steps], [r["batch"] for r, _ in steps]),
        replicas_by_time=([t for _, t in steps],
                          [r["world"] / procs_per_replica for r, _ in steps]),
    )


def plot_comparison(
    runs: Sequence[RunTrace], comparison: Comparison, path: Path, procs_per_replica: int
) -> Path:
    """Quality over steps and over wall time, global batch and replicas over wall time, each
    run one colour; the target is a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    (by_step, by_time), (batch, replicas) = axes
    for run in runs:
        lines = curves(run, comparison.quality, procs_per_replica)
        by_step.plot(*lines.quality_by_step, marker="o", label=run.label)
        by_time.plot(*lines.quality_by_time, marker="o", label=run.label)
        batch.step(*lines.batch_by_time, where="post", label=run.label)
        replicas.step(*lines.replicas_by_time, where="post", label=run.label)
    for ax in (by_step, by_time):
        ax.axhline(comparison.target, color="grey", linestyle="--", linewidth=0.8,
                   label="target (baseline's final)")
        ax.set_ylabel(comparison.quality.label)
    by_step.set_xlabel("optimizer step")
    batch.set_ylabel("global batch")
    replicas.set_ylabel("replicas")
    replicas.yaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in (by_time, batch, replicas):
        ax.set_xlabel("wall time (s)")
    for ax in (by_step, by_time, batch, replicas):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
