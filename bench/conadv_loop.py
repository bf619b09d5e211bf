"""ConAdv in the elastic trainer: step time against plain and sequential adversarial training.

Runs the real trainer (`python -m crescendo_trainer`, one process, one intra-op thread, so the
attack's worker thread has the other core) on MNIST-5k with the `cnn`, B = 64, for --steps
steps in each mode, and reads each step's seconds from the run trace:
- plain: no adversarial training;
- sequential: ConAdv with τ = 0, the copy of step t made with w_t and waited for (PGD-1 on the
  whole batch, then the weight pass on clean + adversarial);
- conadv: τ = 1, the copy of step t+1 made while step t's weight pass runs.
Modes alternate over --repeats rounds so they share the machine's load; the first 10 steps of
each run are left out (start-up). Prints a table; --out writes JSON.

    .venv/bin/python bench/conadv_loop.py --out bench/out/conadv_loop.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from crescendo_spec import contract
from crescendo_spec.trace import read_trace

WARMUP = 10
MODES: dict[str, dict[str, Any]] = {
    "plain": {"method": "none"},
    "sequential": {"method": "conadv", "staleness": 0, "epsilon": 0.03},
    "conadv": {"method": "conadv", "staleness": 1, "epsilon": 0.03},
}


def run(mode: str, steps: int, workdir: Path) -> list[float]:
    """Seconds of each step after the warm-up, for one run of `mode`."""
    run_dir = workdir / f"{mode}-{time.monotonic_ns()}"
    run_dir.mkdir()
    job = run_dir / "job.yaml"
    job.write_text(yaml.safe_dump({
        "dataset": "mnist5k", "model": "cnn", "maxSteps": steps, "gpusPerReplica": 0,
        "batch": {"initial": 64, "max": 64, "perGpuMax": 64, "policy": "fixed"},
        "checkpoint": {"everySteps": 1_000_000}, "logEverySteps": 1_000_000,
        "adversarial": MODES[mode],
    }))
    trace = run_dir / "trace.jsonl"
    env = {
        **os.environ, "OMP_NUM_THREADS": "1", contract.ENV_METRICS_PORT: "0",
        contract.ENV_TRACE_FILE: str(trace), contract.ENV_CHECKPOINT_DIR: str(run_dir / "ckpt"),
    }
    subprocess.run([sys.executable, "-m", "crescendo_trainer", "--config", str(job)],
                   env=env, check=True, capture_output=True, timeout=900)
    seconds = [r["seconds"] for r in read_trace(trace) if r["kind"] == "step"]
    return seconds[WARMUP:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    started = time.perf_counter()
    samples: dict[str, list[float]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            for mode in MODES:
                samples[mode] += run(mode, args.steps, Path(tmp))
    median = {mode: statistics.median(values) for mode, values in samples.items()}
    result: dict[str, Any] = {
        "median_step_seconds": median,
        "conadv_over_plain": median["conadv"] / median["plain"],
        "sequential_over_plain": median["sequential"] / median["plain"],
        "conadv_over_sequential": median["conadv"] / median["sequential"],
        "steps_per_mode": {mode: len(values) for mode, values in samples.items()},
        "settings": {"steps": args.steps, "repeats": args.repeats, "dataset": "mnist5k",
                     "model": "cnn", "batch": 64, "attack": "PGD-1, ε 0.03, targeted off"},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "runtime_seconds": time.perf_counter() - started,
    }
    print(f"{'mode':<12} {'median step (ms)':>17} {'vs plain':>9}")
    for mode, seconds in median.items():
        print(f"{mode:<12} {seconds * 1000:>17.2f} {seconds / median['plain']:>9.2f}")
    print(f"conadv / sequential: {result['conadv_over_sequential']:.3f}")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
