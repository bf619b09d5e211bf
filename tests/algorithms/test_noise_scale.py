"""The noise-scale estimate as the trainer feeds it on one worker, against exact per-sample
gradients: softmax regression on MNIST-5k, SGD with momentum 0.9 and linear LR scaling — the
set-up where pairing consecutive steps was biased upward (+39 % at B 32 to +180 % at B 512)."""

from __future__ import annotations

import pytest
import torch
from crescendo_spec.model import Batch, GnsSettings
from crescendo_trainer.datasets import load_dataset
from crescendo_trainer.measurements import Measurements
from crescendo_trainer.policies import build_policy
from torch import Tensor, nn

EMA = 0.99  # a long horizon, so that the comparison measures bias, not the estimate's noise
STEPS = 500


def exact_terms(model: nn.Linear, x: Tensor, y: Tensor) -> tuple[float, float]:
    """(|G|², tr Σ) over the whole training set from closed-form per-sample gradients: softmax
    regression has g_i = r_i ⊗ [x_i, 1] with r_i = p_i − e_{y_i}, so |g_i|² = |r_i|²(|x_i|² + 1)
    and G = Rᵀ[X, 1]/N; tr Σ = mean |g_i|² − |G|²."""
    with torch.no_grad():
        r = torch.softmax(model(x), dim=1) - nn.functional.one_hot(y, 10).float()
        inputs = torch.cat([x, torch.ones(len(x), 1)], dim=1)
        mean = r.T @ inputs / len(x)
        grad_sq = float((mean**2).sum())
        per_sample_sq = float(((r**2).sum(1) * (inputs**2).sum(1)).mean())
        return grad_sq, per_sample_sq - grad_sq


def train_and_estimate(global_batch: int, seed: int) -> tuple[float, float, float, float]:
    """(estimated |G|², estimated tr Σ, expected |G|², expected tr Σ), EMAs over the run."""
    data = load_dataset("mnist5k")
    x, y = data.train_x.flatten(1), data.train_y
    n = len(y)
    torch.manual_seed(0)
    model = nn.Linear(784, 10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02 * global_batch / 32, momentum=0.9)
    spec = Batch(policy="gns", initial=global_batch, max=4096, gns=GnsSettings(ema=EMA))
    measurements = Measurements(build_policy(spec), spec)
    generator = torch.Generator().manual_seed(seed)
    expected_grad_sq = expected_trace = 0.0
    for _ in range(STEPS):
        # What each step's pair estimates without bias at its weights: sampling B of N without
        # replacement gives E = |G|² − tr Σ/(N − 1) and tr Σ · N/(N − 1) (finite population).
        grad_sq, trace = exact_terms(model, x, y)
        expected_grad_sq = EMA * expected_grad_sq + (1 - EMA) * (grad_sq - trace / (n - 1))
        expected_trace = EMA * expected_trace + (1 - EMA) * trace * n / (n - 1)
        # A uniform subset each step. (Within an epoch's permutation, a step draws from the
        # samples not yet seen this epoch, whose gradients the weights have not fitted: |g_B|²
        # then exceeds the population's by ~30 % here whatever the estimator — an effect of
        # the data order on every path, one worker or many, not a bias of the pairing.)
        index = torch.randperm(n, generator=generator)[:global_batch]
        optimizer.zero_grad()
        for part in index.chunk(2):  # the job's two micro-batches, loss weighted by n_i / B
            loss = nn.functional.cross_entropy(model(x[part]), y[part]) * len(part) / global_batch
            loss.backward()  # type: ignore[no-untyped-call]
            measurements.after_micro(list(model.parameters()), len(part), global_batch)
        measurements.observe_gradients(list(model.parameters()), global_batch, global_batch)
        optimizer.step()
    noise = measurements.noise
    assert noise.count == STEPS
    return noise.grad_sq, noise.trace, expected_grad_sq, expected_trace


SEEDS = 8


# The noise scale here (~500) is far above B, so one run's |G|² estimate is noisy: measured over 8
# seeds, its ratio to the truth has a standard deviation of 0.46 at B 32, 0.29 at 128 and 0.11 at
# 512 (means 0.91, 1.04, 1.03). The tolerances are about 2.5 standard errors of the 8-seed mean;
# pairing consecutive steps, biased by +39 %, +79 % and +180 % at these sizes, fails all three.
@pytest.mark.slow
@pytest.mark.parametrize(("global_batch", "tolerance"), [(32, 0.4), (128, 0.25), (512, 0.1)])
def test_one_worker_estimate_matches_exact_per_sample_gradients_during_training(
    global_batch: int, tolerance: float,
) -> None:
    seeds = SEEDS
    runs = [train_and_estimate(global_batch, seed) for seed in range(seeds)]
    grad_sq, trace, want_grad_sq, want_trace = (sum(r[i] for r in runs) / seeds for i in range(4))
    assert trace == pytest.approx(want_trace, rel=0.15)
    assert grad_sq == pytest.approx(want_grad_sq, rel=tolerance)
    assert trace / grad_sq == pytest.approx(want_trace / want_grad_sq, rel=tolerance)
