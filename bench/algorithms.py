"""Crescendo's batch-size policies through the real trainer: steps and modelled time to a target.

Every policy run is the built-in trainer (`python -m crescendo_trainer`, one process, world 1,
one intra-op thread; bench/trainer_runs.py), its run trace read back, on three workloads
(bench/workloads.py: the settings, the papers' epoch-based ones scaled to the run length and
said in the JSON under `settings`):
- Fashion-MNIST `cnn` (fixed B0, adabatch, abs, absa, gns, goodput),
- MNIST-5k `mlp`, the same policies over several seeds,
- bench/lm_ramp.py's GPT (fixed B0, its schedule ramp, gns, goodput; its job spec, imported).
The target is the fixed-B0 baseline's final quality, the mean over seeds: its test accuracy
minus one binomial standard error of that accuracy on the test set (0.3 points on
Fashion-MNIST's 10k test images, as the old bench's fixed tolerance), or its validation loss for
the LM (lower is better). A run's steps to target are those of its first evaluation that meets
it (classification: each epoch end, the trainer's rule; LM: every `evalEverySteps`). Its time
to target is modelled on a GPU cluster (bench/cluster_model.py: assumed figures, no device was
lent), from the global batch of each step the trainer took.

The step-time ratios (ConAdv, sequential adversarial and Neumann against plain SGD) come from a
short timing harness (bench/step_ratios.py); the Hessian's share of epoch time is ABSA's
curvature measurements ÷ its epochs in the Fashion-MNIST run, both from the run trace's clock.
Prints a table per workload and writes JSON (`--out`); the top-level keys are Fashion-MNIST's.

    .venv/bin/python bench/algorithms.py --out bench/out/algorithms.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Run as a script (python bench/algorithms.py): the sibling modules are imported as bench.*,
# the names mypy and the tests know them by.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from crescendo_trainer.datasets import load_dataset

from bench.cluster_model import modelled_time
from bench.step_ratios import step_times
from bench.trainer_runs import Evaluation, run_trainer
from bench.workloads import (
    NOISE_POLICIES,
    Workload,
    accuracy_tolerance,
    default_workloads,
    smoke_workloads,
)

FASHION = "fashion-mnist-cnn"  # the workload whose figures are the JSON's top-level keys
BASELINE = "fixed_b0"


@dataclass(frozen=True)
class RunResult:
    """What one trainer run contributes: its evaluations, each step's B, its timings."""

    policy: str
    seed: int
    evals: list[Evaluation]
    batches: list[int]
    decisions: list[str]
    wall_seconds: float
    curvature_seconds: float
    epoch_seconds: float

    def first_meeting(self, target: float, lower_is_better: bool) -> Evaluation | None:
        for evaluation in self.evals:
            met = evaluation.quality <= target if lower_is_better else evaluation.quality >= target
            if met:
                return evaluation
        return None


def train(workload: Workload, policy: str, seed: int, work: Path, threads: int) -> RunResult:
    started = time.perf_counter()
    run = run_trainer(f"{workload.name}-{policy}-{seed}", workload.job(policy, seed), work,
                      threads=threads)
    evals = run.evaluations(workload.metric)
    print(f"  {workload.name} {policy} seed {seed}: {len(run.steps)} steps, final B "
          f"{run.final_batch}, {workload.metric} {evals[-1].quality:.4f}, "
          f"{time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    return RunResult(policy, seed, evals, [s.batch for s in run.steps], run.decisions,
                     run.wall_seconds, run.curvature_seconds(), sum(run.epoch_seconds()))


def _spread(values: list[float | None]) -> dict[str, Any]:
    """Mean and sample standard deviation over seeds; None unless every seed has a value."""
    known = [v for v in values if v is not None]
    complete = bool(known) and len(known) == len(values)
    return {
        "mean": statistics.fmean(known) if complete else None,
        "std": statistics.stdev(known) if complete and len(known) > 1 else None,
        "per_seed": values,
    }


def target_of(workload: Workload, baseline: list[RunResult], test_samples: int) -> float:
    final = statistics.fmean(r.evals[-1].quality for r in baseline)
    if workload.lower_is_better:
        return final
    return final - accuracy_tolerance(final, test_samples)


def summarize(
    workload: Workload, runs: dict[str, list[RunResult]], test_samples: int
) -> dict[str, Any]:
    target = target_of(workload, runs[BASELINE], test_samples)
    lower = workload.lower_is_better
    out: dict[str, Any] = {
        "model": workload.model, "dataset": workload.dataset, "metric": workload.metric,
        "lower_is_better": lower, "seeds": list(workload.seeds), "target": target,
        "target_rule": "fixed-B0 final val_loss (mean over seeds)" if lower else
        f"fixed-B0 final accuracy (mean over seeds) − one standard error on {test_samples} "
        "test samples",
        "steps_to_target": {}, "samples_to_target": {}, "time_to_target": {},
        "time_to_target_with_rescales": {}, "rescales_to_target": {}, "final_quality": {},
        "step_ratio_vs_fixed": {}, "total_steps": {}, "final_batch": {}, "wall_seconds": {},
        "decisions": {}, "curves": {},
    }
    for policy, results in runs.items():
        steps: list[float | None] = []
        samples: list[float | None] = []
        seconds: list[float | None] = []
        paused: list[float | None] = []
        rescales: list[int | None] = []
        for r in results:
            hit = r.first_meeting(target, lower)
            steps.append(None if hit is None else hit.step)
            samples.append(None if hit is None else hit.samples)
            cost = None if hit is None else modelled_time(
                workload.cluster, r.batches[: hit.step], policy in NOISE_POLICIES)
            seconds.append(None if cost is None else cost.seconds)
            paused.append(None if cost is None else cost.with_rescales)
            rescales.append(None if cost is None else cost.rescales)
        out["steps_to_target"][policy] = _spread(steps)
        out["samples_to_target"][policy] = _spread(samples)
        out["time_to_target"][policy] = _spread(seconds)
        out["time_to_target_with_rescales"][policy] = _spread(paused)
        out["rescales_to_target"][policy] = rescales
        out["final_quality"][policy] = _spread([r.evals[-1].quality for r in results])
        out["total_steps"][policy] = [len(r.batches) for r in results]
        out["final_batch"][policy] = [r.batches[-1] for r in results]
        out["wall_seconds"][policy] = [round(r.wall_seconds, 1) for r in results]
        out["decisions"][policy] = {str(r.seed): r.decisions for r in results}
        out["curves"][policy] = {str(r.seed): [[e.step, e.samples, e.quality] for e in r.evals]
                                 for r in results}
    fixed = out["steps_to_target"][BASELINE]["mean"]
    for policy in runs:
        mean = out["steps_to_target"][policy]["mean"]
        out["step_ratio_vs_fixed"][policy] = fixed / mean if fixed and mean else None
    out["plateau"] = plateau(workload, runs[BASELINE], test_samples)
    out["throughput_model"] = workload.cluster.describe()
    out["settings"] = workload.settings()
    return out


def plateau(workload: Workload, baseline: list[RunResult], test_samples: int) -> dict[str, Any]:
    """Whether the baseline has stopped improving: its last two evaluations per seed, and
    whether they differ by at most the target's tolerance (classification)."""
    last_two = [[e.quality for e in r.evals[-2:]] for r in baseline]
    if workload.lower_is_better:
        return {"last_two": last_two}
    tolerance = accuracy_tolerance(statistics.fmean(q[-1] for q in last_two), test_samples)
    return {"last_two": last_two, "tolerance": tolerance,
            "flat": all(abs(q[-1] - q[0]) <= tolerance for q in last_two)}


def _mean_std(cell: dict[str, Any], scale: float = 1.0, digits: int = 0) -> str:
    if cell["mean"] is None:
        reached = sum(v is not None for v in cell["per_seed"])
        return f"— ({reached}/{len(cell['per_seed'])})"
    text = f"{cell['mean'] * scale:.{digits}f}"
    return text if cell["std"] is None else f"{text} ± {cell['std'] * scale:.{digits}f}"


def table(name: str, summary: dict[str, Any]) -> str:
    metric = summary["metric"]
    quality_digits = 4
    lines = [
        f"{name}: target {metric} {summary['target']:.4f} ({summary['target_rule']})",
        f"| policy | seeds | steps to target | ratio vs fixed | final {metric} | "
        "modelled time to target | + rescale pauses | final B |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for policy, steps in summary["steps_to_target"].items():
        ratio = summary["step_ratio_vs_fixed"][policy]
        lines.append(
            f"| {policy} | {len(steps['per_seed'])} | {_mean_std(steps)} | "
            f"{f'{ratio:.2f}×' if ratio else '—'} | "
            f"{_mean_std(summary['final_quality'][policy], digits=quality_digits)} | "
            f"{_mean_std(summary['time_to_target'][policy], 1000.0)} ms | "
            f"{_mean_std(summary['time_to_target_with_rescales'][policy], digits=1)} s | "
            f"{'/'.join(str(b) for b in summary['final_batch'][policy])} |")
    return "\n".join(lines)


def fashion_keys(summary: dict[str, Any], runs: dict[str, list[RunResult]],
                 ratios: dict[str, float]) -> dict[str, Any]:
    """The old bench's top-level keys, for Fashion-MNIST (means over its seeds)."""
    shares = {p: statistics.fmean(r.curvature_seconds / r.epoch_seconds for r in runs[p])
              for p in ("abs", "absa") if p in runs}
    return {
        "steps_to_target": {p: c["mean"] for p, c in summary["steps_to_target"].items()},
        "final_accuracy": {p: c["mean"] for p, c in summary["final_quality"].items()},
        "target_accuracy": summary["target"],
        "conadv_step_ratio": ratios["conadv"] / ratios["vanilla"],
        "sequential_adv_step_ratio": ratios["sequential"] / ratios["vanilla"],
        "conadv_vs_same_weight_pass_ratio": ratios["conadv"] / ratios["vanilla_clean_plus_adv"],
        "neumann_step_ratio": ratios["neumann"] / ratios["vanilla"],
        "step_seconds": ratios,
        "hessian_share_of_epoch": shares.get("absa"),
        "curvature_share_of_epoch": shares,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write the JSON here")
    parser.add_argument("--smoke", action="store_true",
                        help="digits and a few hundred LM sequences, two policies each: seconds")
    parser.add_argument("--fashion-seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--small-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--lm-seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--workloads", nargs="+", help="only these (Fashion-MNIST is needed "
                        "for the top-level keys)")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads per run")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    workloads = smoke_workloads() if args.smoke else default_workloads(
        tuple(args.fashion_seeds), tuple(args.small_seeds), tuple(args.lm_seeds))
    workloads = [w for w in workloads if not args.workloads or w.name in args.workloads]
    summaries: dict[str, dict[str, Any]] = {}
    all_runs: dict[str, dict[str, list[RunResult]]] = {}
    with tempfile.TemporaryDirectory(prefix="algorithms-") as tmp:
        for workload in workloads:
            runs = {policy: [train(workload, policy, seed, Path(tmp), args.threads)
                             for seed in workload.seeds] for policy in workload.policies}
            test_samples = 0 if workload.language else len(load_dataset(workload.dataset).test_y)
            summaries[workload.name] = summarize(workload, runs, test_samples)
            all_runs[workload.name] = runs
            print(table(workload.name, summaries[workload.name]) + "\n", flush=True)
    result: dict[str, Any] = {}
    if FASHION in summaries:
        data = load_dataset(summaries[FASHION]["dataset"])
        b0 = summaries[FASHION]["settings"]["b0"]
        ratios = step_times(data, b0, steps=10 if args.smoke else 40)
        result.update(fashion_keys(summaries[FASHION], all_runs[FASHION], ratios))
        for key in ("conadv_step_ratio", "sequential_adv_step_ratio", "neumann_step_ratio",
                    "hessian_share_of_epoch"):
            value = result[key]
            print(f"{key}: {'—' if value is None else f'{value:.3f}'}")
    result["workloads"] = summaries
    result["settings"] = {
        **{name: s["settings"] for name, s in summaries.items()},
        "threads_per_run": args.threads, "smoke": args.smoke,
        "step_ratios": "bench/step_ratios.py: median of 40 steps (3 dropped) per mode at B0, "
                       "cnn, one thread, ConAdv τ = 1 on a worker thread",
        "hessian_share": "ABSA run: curvature measurement seconds (λ and the Hutchinson trace "
                         "taken with it) ÷ epoch seconds, from the trace's record clock",
    }
    result["runtime_seconds"] = time.perf_counter() - started
    print(f"runtime {result['runtime_seconds']:.0f} s")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
