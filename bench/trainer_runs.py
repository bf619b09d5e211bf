"""Runs of the real trainer for the benches and the quality tests, and what their traces tell.

One run is one `python -m crescendo_trainer --config job.json` process (world 1, the metrics
port off, `OMP_NUM_THREADS` set), as bench/lm_ramp.py runs it; its run trace
(crescendo_spec.trace) is read back into the facts the comparisons need: every step's batch and
layout, the evaluations, the decisions, and the time the curvature measurement took. The trace
has no timing field for a measurement, so that time is read off the record clock: the trainer
writes a step's record, then takes the step's measurements, then writes their records, so the gap
from a step record to the first `measure` record of the same step is the measurement itself.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crescendo_spec import contract
from crescendo_spec.trace import read_trace

HESSIAN_EIGENVALUE = "hessian_eigenvalue"  # the trainer's measurement name (policies.base)


@dataclass(frozen=True)
class StepRecord:
    step: int
    epoch: int
    batch: int
    accumulation: int
    seconds: float  # the trainer's own step time (micro-batches to optimizer step)
    time: float  # unix seconds when the record was written


@dataclass(frozen=True)
class Evaluation:
    step: int
    epoch: int
    samples: int  # training samples (sequences for the language model) seen by then
    quality: float  # test accuracy, or validation loss for the language model


@dataclass(frozen=True)
class TrainerRun:
    name: str
    records: list[dict[str, Any]]
    wall_seconds: float  # the whole process, start-up included

    @property
    def steps(self) -> list[StepRecord]:
        return [
            StepRecord(r["step"], r["epoch"], r["batch"], r["accumulation"], r["seconds"],
                       r["time"])
            for r in self.records if r["kind"] == "step"
        ]

    def evaluations(self, metric: str) -> list[Evaluation]:
        seen, samples = 0, {0: 0}
        for step in self.steps:
            seen += step.batch
            samples[step.step] = seen
        return [Evaluation(r["step"], r["epoch"], samples[r["step"]], float(r[metric]))
                for r in self.records if r["kind"] == "eval"]

    @property
    def decisions(self) -> list[str]:
        return [f"step {r['step']}: {r['reason']}" for r in self.records
                if r["kind"] == "decision"]

    @property
    def final_batch(self) -> int:
        return self.steps[-1].batch

    def curvature_seconds(self) -> float:
        """Seconds spent in the curvature measurements (each λ check: its eigenvalue and the
        Hutchinson trace the trainer takes with it), from the record clock."""
        step_time = {r["step"]: float(r["time"]) for r in self.records if r["kind"] == "step"}
        first_measure: dict[int, float] = {}
        measured_curvature: set[int] = set()
        for r in self.records:
            if r["kind"] == "measure":
                first_measure.setdefault(r["step"], float(r["time"]))
                if r["name"] == HESSIAN_EIGENVALUE:
                    measured_curvature.add(r["step"])
        return sum((first_measure[s] - step_time[s] for s in measured_curvature), 0.0)

    def epoch_seconds(self) -> list[float]:
        """Wall seconds of each epoch, from the start of its first step to the start of the next
        epoch's (the last: to the run's final record): its steps and what follows its last one,
        the curvature measurement, the decision, the evaluation and a checkpoint."""
        steps = self.steps
        starts = [steps[0].time - steps[0].seconds]
        starts += [b.time - b.seconds for a, b in itertools.pairwise(steps) if b.epoch != a.epoch]
        bounds = [*starts, float(self.records[-1]["time"])]
        return [end - start for start, end in itertools.pairwise(bounds)]


def run_trainer(
    name: str, spec: dict[str, Any], work: Path, *, threads: int = 1, timeout: float = 1800
) -> TrainerRun:
    """Train `spec` (an AdaptiveBatchJob document; its checkpoint.dir is set here, under `work`)
    in a fresh trainer process and read its trace back."""
    job, trace = work / f"{name}.json", work / f"{name}.trace.jsonl"
    checkpoints = work / f"{name}-checkpoints"
    document = json.loads(json.dumps(spec))  # a copy: the caller's spec is left as it was
    document["spec"].setdefault("checkpoint", {})["dir"] = str(checkpoints)
    job.write_text(json.dumps(document))
    # A run starts from nothing: the trainer would resume from a checkpoint left in its dir.
    trace.unlink(missing_ok=True)
    shutil.rmtree(checkpoints, ignore_errors=True)
    env = {**os.environ, contract.ENV_TRACE_FILE: str(trace), contract.ENV_METRICS_PORT: "0",
           "OMP_NUM_THREADS": str(threads)}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "crescendo_trainer", "--config", str(job)],
                          env=env, capture_output=True, text=True, check=False, timeout=timeout)
    shutil.rmtree(checkpoints, ignore_errors=True)
    if done.returncode != 0:
        raise RuntimeError(f"{name}: trainer exited {done.returncode}\n{done.stderr[-3000:]}")
    return TrainerRun(name, read_trace(trace), time.perf_counter() - started)
