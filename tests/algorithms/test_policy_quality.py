"""Every batch-size policy, at its documented defaults, trains as well as the fixed small batch.

Through the real trainer (one process per run, bench/trainer_runs.py), on the bench's small
workload (bench/workloads.py: `mlp` on MNIST-5k, B0 32 → 512, 20 epochs, seed 0). The only
settings changed from the spec's defaults are the epoch-based ones scaled to the run's length, as
the bench states them: AdaBatch resizes every 4 epochs (paper: 20 of 100), ABS/ABSA grow anyway
after 2 epochs without an increase (paper: 10 of 90), every run's LR decays ×0.2 at epochs 7/13/18
(ABS's baseline: 30/60/80 of 90); the schedule's ramp (it has no default) covers the first half of
the samples, as the LM bench's does. The target is the bench's: the fixed-B0 run's final test
accuracy minus one standard error on the 1,000 test images. A policy that no longer reaches it
fails here, whatever its speed-up. About a minute on two cores.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import get_args

import pytest
from crescendo_spec.model import Batch
from crescendo_trainer.datasets import load_dataset

from bench.algorithms import BASELINE, RunResult, target_of, train
from bench.workloads import Workload, default_workloads

pytestmark = pytest.mark.slow

# Every policy the spec names (a new one is tested as soon as it is added), "fixed" being the
# baseline the others are held to.
POLICIES = [p for p in get_args(Batch.model_fields["policy"].annotation) if p != "fixed"]
SEED = 0


@pytest.fixture(scope="module")
def workload() -> Workload:
    small = next(w for w in default_workloads((SEED,), (SEED,), (SEED,))
                 if w.name == "mnist5k-mlp")
    return dataclasses.replace(small, policies=(BASELINE, *POLICIES), seeds=(SEED,))


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("policy-quality")


@pytest.fixture(scope="module")
def target(workload: Workload, work: Path) -> float:
    baseline = train(workload, BASELINE, SEED, work, threads=1)
    return target_of(workload, [baseline], len(load_dataset(workload.dataset).test_y))


def describe(run: RunResult, target: float) -> str:
    curve = ", ".join(f"{e.step}:{e.quality:.3f}" for e in run.evals)
    return (f"{run.policy} never reached {target:.4f}: final {run.evals[-1].quality:.4f} at B "
            f"{run.batches[-1]}; (step: accuracy) {curve}; decisions {run.decisions}")


@pytest.mark.parametrize("policy", POLICIES)
def test_policy_at_its_defaults_reaches_the_fixed_b0_target(
    policy: str, workload: Workload, work: Path, target: float
) -> None:
    run = train(workload, policy, SEED, work, threads=1)
    assert run.first_meeting(target, workload.lower_is_better) is not None, describe(run, target)
