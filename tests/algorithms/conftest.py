"""Fixtures of the algorithm tests: small real data (scikit-learn's digits) and small models."""

from __future__ import annotations

import pytest
import torch
from sklearn.datasets import load_digits
from torch import Tensor, nn


@pytest.fixture(autouse=True)
def _deterministic() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def digits() -> tuple[Tensor, Tensor]:
    """1,797 8×8 images scaled to [0, 1] (shape N×1×8×8) and their labels."""
    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    return x, torch.tensor(data.target)


def mlp() -> nn.Module:
    """2,410 parameters: small enough for the exact Hessian from torch.func."""
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10))


def cnn(batchnorm: bool = True) -> nn.Sequential:
    """A small CNN for 8×8 inputs, with BatchNorm so eval-mode guards are exercised."""
    norm: nn.Module = nn.BatchNorm2d(8) if batchnorm else nn.Identity()
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        norm,
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(8 * 4 * 4, 10),
    )


def train(model: nn.Module, data: tuple[Tensor, Tensor], steps: int, lr: float = 0.5) -> None:
    """A few SGD steps, so measurements are taken where training takes them, not at init."""
    x, y = data
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(1)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, x.shape[0], (64,), generator=gen)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()  # type: ignore[no-untyped-call]
        opt.step()


@pytest.fixture(scope="session")
def trained_mlp(digits: tuple[Tensor, Tensor]) -> nn.Module:
    """Shared by the measurement tests: read it, never train it further."""
    torch.manual_seed(0)
    model = mlp()
    train(model, digits, 100)
    return model


@pytest.fixture()
def trained_cnn(digits: tuple[Tensor, Tensor]) -> nn.Sequential:
    model = cnn()
    train(model, digits, 50, lr=0.1)
    return model
