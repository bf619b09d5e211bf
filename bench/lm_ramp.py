"""A token ramp against a fixed small batch on the built-in language model, in one run.

Each run is the real trainer (`python -m crescendo_trainer`, one process, its run trace read
back): the small GPT on the Python standard library's byte-level tokens, the same sample budget
(`maxSamples`, sequences of `seqLen` tokens), seed, optimizer and LR rule for every run:
- fixed: B = B0 sequences throughout (the baseline);
- ramp: GPT-3's linear ramp from B0 to B_max over the first `--ramp-tokens`, in steps of B0
  (policy `schedule`, `rampUnits`), replicas following ceil(B / perGpuMax) on a cluster;
- gns: growth toward the gradient noise scale (policy `gns`).
The target is the fixed run's final validation loss; a run's steps (and tokens) to the target are
those of its first evaluation at or below it. Prints a table and writes JSON (`--out`):
`steps_to_target`, `tokens_to_target`, `final_val_loss` per run, `target_val_loss`, and the
step ratio fixed ÷ run. The issue's goal: the ramp ≥ 1.75× fewer steps, final loss ≤ fixed.

    .venv/bin/python bench/lm_ramp.py --out bench/out/lm_ramp.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from crescendo_spec.schedule import format_units

if __package__ in (None, ""):  # run as a script: the repository root on the path for bench.*
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.trainer_runs import run_trainer

B0, SEQ_LEN = 16, 64


def spec(policy: dict[str, Any], args: argparse.Namespace, checkpoints: Path) -> dict[str, Any]:
    return {
        "apiVersion": "crescendo.dev/v1alpha1", "kind": "AdaptiveBatchJob",
        "metadata": {"name": "lm-ramp-bench"},
        "spec": {
            "gpusPerReplica": 0, "model": "gpt", "dataset": "python-stdlib",
            "maxSamples": args.samples, "seed": args.seed,
            "batch": {"initial": B0, "max": args.b_max, "perGpuMax": args.b_max, **policy},
            # LAMB (Adam moments, layer-wise trust ratio: made for large batches) with the LR
            # scaled with B by `--lr-scaling`, a short warm-up: the same for every run.
            "learningRate": {"base": args.lr, "scaling": args.lr_scaling, "warmupSteps": 50},
            "optimizer": {"name": "lamb"},
            "language": {"seqLen": SEQ_LEN, "evalEverySteps": args.eval_every,
                         "evalSequences": args.eval_sequences},
            "checkpoint": {"dir": str(checkpoints), "everySteps": 1_000_000},
            "logEverySteps": 500,
        },
    }


def policies(ramp_tokens: str) -> dict[str, dict[str, Any]]:
    return {
        "fixed": {"policy": "fixed"},
        "ramp": {"policy": "schedule", "schedule": {"rampUnits": ramp_tokens, "increment": B0}},
        "gns": {"policy": "gns"},
    }


def train(
    name: str, policy: dict[str, Any], args: argparse.Namespace, work: Path
) -> dict[str, Any]:
    run = run_trainer(name, spec(policy, args, work / f"{name}-checkpoints"), work,
                      threads=args.threads)
    return curve(run.records, run.wall_seconds)


def curve(records: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    """Evaluations as (step, samples seen, val_loss), from the trace's step and eval records."""
    samples, seen = {0: 0}, 0
    for r in records:
        if r["kind"] == "step":
            seen += r["batch"]
            samples[r["step"]] = seen
    evals = [(r["step"], samples[r["step"]], r["val_loss"]) for r in records
             if r["kind"] == "eval"]
    batches = [r["batch"] for r in records if r["kind"] == "step"]
    return {"evals": evals, "steps": max(samples), "samples": seen, "seconds": seconds,
            "final_batch": batches[-1], "decisions": sum(r["kind"] == "decision" for r in records)}


def to_target(run: dict[str, Any], target: float) -> tuple[int | None, int | None]:
    for step, samples, loss in run["evals"]:
        if loss <= target:
            return step, samples * SEQ_LEN
    return None, None


def summarize(runs: dict[str, dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    target = runs["fixed"]["evals"][-1][2]
    reached = {name: to_target(run, target) for name, run in runs.items()}
    fixed_steps = reached["fixed"][0]
    return {
        "target_val_loss": target,
        "steps_to_target": {n: r[0] for n, r in reached.items()},
        "tokens_to_target": {n: r[1] for n, r in reached.items()},
        "step_ratio": {n: (fixed_steps / r[0] if r[0] and fixed_steps else None)
                       for n, r in reached.items()},
        "final_val_loss": {n: run["evals"][-1][2] for n, run in runs.items()},
        "steps": {n: run["steps"] for n, run in runs.items()},
        "final_batch": {n: run["final_batch"] for n, run in runs.items()},
        "wall_seconds": {n: run["seconds"] for n, run in runs.items()},
        "curves": {n: run["evals"] for n, run in runs.items()},
        "settings": {"b0": B0, "b_max": args.b_max, "seq_len": SEQ_LEN,
                     "samples": args.samples, "tokens": args.samples * SEQ_LEN,
                     "ramp_tokens": args.ramp_tokens, "lr": args.lr,
                     "lr_scaling": args.lr_scaling, "optimizer": "lamb",
                     "seed": args.seed, "eval_every_steps": args.eval_every,
                     "eval_sequences": args.eval_sequences},
    }


def table(result: dict[str, Any]) -> str:
    target = result["target_val_loss"]
    lines = [f"target validation loss (fixed B0 = {B0}, final): {target:.4f}",
             f"{'run':<6} {'steps':>6} {'to target':>9} {'ratio':>6} {'tokens to target':>16} "
             f"{'final loss':>10} {'final B':>7} {'wall s':>7}"]
    for name in result["steps"]:
        steps_to = result["steps_to_target"][name]
        tokens = result["tokens_to_target"][name]
        ratio = result["step_ratio"][name]
        lines.append(
            f"{name:<6} {result['steps'][name]:>6} {steps_to or '—':>9} "
            f"{f'{ratio:.2f}×' if ratio else '—':>6} "
            f"{format_units(tokens, 2) if tokens else '—':>16} "
            f"{result['final_val_loss'][name]:>10.4f} {result['final_batch'][name]:>7} "
            f"{result['wall_seconds'][name]:>7.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, help="write the JSON here")
    parser.add_argument("--samples", type=int, default=64_000, help="sequences per run")
    parser.add_argument("--ramp-tokens", default="2M", help="ramp length (K/M/B suffixes)")
    parser.add_argument("--lr", type=float, default=0.004, help="LR at B0")
    parser.add_argument("--lr-scaling", default="sqrt", choices=("linear", "sqrt", "none"))
    parser.add_argument("--b-max", type=int, default=64, help="largest batch (sequences)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-every", type=int, default=50, help="steps between evaluations")
    parser.add_argument("--eval-sequences", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads per run")
    parser.add_argument("--runs", nargs="+", default=["fixed", "ramp", "gns"],
                        help="which runs (fixed is always run: it sets the target)")
    args = parser.parse_args(argv)
    chosen = {n: p for n, p in policies(args.ramp_tokens).items()
              if n == "fixed" or n in args.runs}
    with tempfile.TemporaryDirectory(prefix="lm-ramp-") as tmp:
        runs = {}
        for name, policy in chosen.items():
            print(f"  {name}: training on {args.samples} sequences…", file=sys.stderr)
            runs[name] = train(name, policy, args, Path(tmp))
    result = summarize(runs, args)
    print(table(result))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
