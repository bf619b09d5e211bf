"""ConAdv: τ = 0 is sequential adversarial training bit for bit; batch t uses weights w_{t−τ}."""

from __future__ import annotations

import copy
import threading

import pytest
import torch
from crescendo_trainer.adversarial import ConAdv, adversarial_loss, conadv_attack
from crescendo_trainer.adversarial.conadv import AdversarialBatch
from torch import Tensor, nn

ATTACK = conadv_attack(
    epsilon=9 / 255, step_size=None, steps=1, random_start=True, targeted=True, num_classes=10
)
SEED = 5


def batches(
    digits: tuple[Tensor, Tensor], count: int, size: int = 32
) -> list[tuple[Tensor, Tensor]]:
    x, y = digits
    return [(x[i * size : (i + 1) * size], y[i * size : (i + 1) * size]) for i in range(count)]


def step(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    clean: tuple[Tensor, Tensor],
    adv: AdversarialBatch,
) -> None:
    opt.zero_grad()
    adversarial_loss(model, clean, adv).backward()  # type: ignore[no-untyped-call]
    opt.step()


def conadv_run(
    model: nn.Module, data: list[tuple[Tensor, Tensor]], tau: int, steps: int, backend: str
) -> tuple[ConAdv, list[dict[str, Tensor]], list[AdversarialBatch]]:
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    pipe = ConAdv(model, ATTACK, tau, seed=SEED, backend=backend)  # type: ignore[arg-type]
    snapshots, used = [], []
    for t in range(steps):
        snapshots.append(copy.deepcopy(model.state_dict()))  # w_t
        pipe.begin_step(t, data[t : t + tau + 1])
        adv = pipe.take(t)
        used.append(adv)
        step(model, opt, data[t], adv)
    pipe.close()
    return pipe, snapshots, used


@pytest.mark.parametrize("backend", ["thread", "inline"])
def test_tau_zero_reproduces_sequential_adversarial_training_bit_for_bit(
    trained_cnn: nn.Module, digits: tuple[Tensor, Tensor], backend: str
) -> None:
    data = batches(digits, 8)
    model, reference = copy.deepcopy(trained_cnn), copy.deepcopy(trained_cnn)
    conadv_run(model, data, 0, 6, backend)
    # Plain sequential adversarial training: attack with the live weights, then the weight step.
    opt = torch.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9)
    for t in range(6):
        x, y = data[t]
        gen = torch.Generator().manual_seed(SEED * 1_000_003 + t)
        adv = AdversarialBatch(t, ATTACK(reference, x, y, gen), y, t)
        step(reference, opt, data[t], adv)
    for (name, a), b in zip(
        model.state_dict().items(), reference.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("tau", [1, 2])
def test_adversarial_batch_t_is_made_with_weights_of_step_t_minus_tau(
    trained_cnn: nn.Module, digits: tuple[Tensor, Tensor], tau: int
) -> None:
    data = batches(digits, 12)
    model = copy.deepcopy(trained_cnn)
    pipe, snapshots, used = conadv_run(model, data, tau, 8, "thread")
    assert pipe.history == [(t, max(t - tau, 0)) for t in range(8)]
    probe = copy.deepcopy(trained_cnn)
    for t, adv in enumerate(used):
        probe.load_state_dict(snapshots[adv.weight_version])
        x, y = data[t]
        again = ATTACK(probe, x, y, torch.Generator().manual_seed(SEED * 1_000_003 + t))
        assert torch.equal(adv.inputs, again), t
    if tau >= 1:  # and not with the newer weights
        probe.load_state_dict(snapshots[7])
        x, y = data[7]
        fresh = ATTACK(probe, x, y, torch.Generator().manual_seed(SEED * 1_000_003 + 7))
        assert not torch.equal(used[7].inputs, fresh)


def test_thread_backend_equals_inline_backend_and_runs_on_a_worker_thread(
    trained_cnn: nn.Module, digits: tuple[Tensor, Tensor]
) -> None:
    data = batches(digits, 8)
    threads: set[int] = set()

    def spy(model: nn.Module, x: Tensor, y: Tensor, gen: torch.Generator) -> Tensor:
        threads.add(threading.get_ident())
        return ATTACK(model, x, y, gen)

    a, b = copy.deepcopy(trained_cnn), copy.deepcopy(trained_cnn)
    for model, backend in ((a, "thread"), (b, "inline")):
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        pipe = ConAdv(model, spy, 1, seed=SEED, backend=backend)  # type: ignore[arg-type]
        for t in range(5):
            pipe.begin_step(t, data[t : t + 2])
            step(model, opt, data[t], pipe.take(t))
        pipe.close()
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert threading.get_ident() in threads and len(threads) == 2  # the worker made some


def test_attack_leaves_live_model_batchnorm_stats_alone(
    trained_cnn: nn.Module, digits: tuple[Tensor, Tensor]
) -> None:
    data = batches(digits, 4)
    trained_cnn.train()
    before = {k: v.clone() for k, v in trained_cnn.state_dict().items()}
    pipe = ConAdv(trained_cnn, ATTACK, 1, backend="thread")
    pipe.begin_step(0, data[0:2])
    pipe.take(0)
    pipe.close()
    assert all(torch.equal(v, before[k]) for k, v in trained_cnn.state_dict().items())
    assert trained_cnn.training


def test_bad_staleness_and_missing_batches_are_rejected(
    trained_cnn: nn.Module, digits: tuple[Tensor, Tensor]
) -> None:
    with pytest.raises(ValueError, match=r"adversarial\.staleness"):
        ConAdv(trained_cnn, ATTACK, -1)
    pipe = ConAdv(trained_cnn, ATTACK, 2, backend="inline")
    with pytest.raises(ValueError, match="needs the batches"):
        pipe.begin_step(0, batches(digits, 2))
    with pytest.raises(KeyError):
        pipe.take(0)
