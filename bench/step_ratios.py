"""Step-time ratios of the adversarial and second-order methods, on the built-in `cnn` at B0.

A short timing harness, not a training run: it times single optimizer steps of the trainer's own
components (ConAdv's pipeline, the attack, the Neumann optimizer) back to back in one process,
one intra-op thread, so every mode sees the same machine load (on two shared cores a training
run's own step times follow other users' jobs more than the method). The medians give
bench/algorithms.py its `conadv_step_ratio`, `sequential_adv_step_ratio` and
`neumann_step_ratio`.
"""

from __future__ import annotations

import statistics
import time

import torch
from crescendo_trainer.adversarial import ConAdv, adversarial_loss, conadv_attack
from crescendo_trainer.adversarial.conadv import AttackFn
from crescendo_trainer.datasets import TensorDataset
from crescendo_trainer.models import build_model
from crescendo_trainer.optim import Neumann
from torch import nn

MODES = ("vanilla", "sequential", "conadv", "vanilla_clean_plus_adv", "neumann")
WARMUP = 3  # first steps dropped: allocator and thread pool warm-up
CE = nn.functional.cross_entropy


def step_times(data: TensorDataset, batch: int, steps: int = 40) -> dict[str, float]:
    """Median step seconds at `batch`: vanilla (SGD momentum), sequential adversarial (τ = 0,
    inline), ConAdv (τ = 1, worker thread), the clean+adversarial weight pass alone, and
    vanilla with the Neumann update."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one core for the weight pass, the other for ConAdv's worker
    attack = conadv_attack(epsilon=9 / 255, step_size=None, steps=1, random_start=True,
                           targeted=True, num_classes=data.num_classes)
    out: dict[str, float] = {}
    try:
        for mode in MODES:
            out[mode] = _median_step(mode, data, batch, steps, attack)
    finally:
        torch.set_num_threads(threads)
    return out


def _median_step(
    mode: str, data: TensorDataset, batch: int, steps: int, attack: AttackFn
) -> float:
    torch.manual_seed(0)
    model = build_model("cnn", data.input_shape, data.num_classes)
    opt: torch.optim.Optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    if mode == "neumann":  # vanilla's step with the Neumann update instead of SGD momentum
        opt = Neumann(model.parameters(), 0.05, sgd_warmup_epochs=0)
    batches = [(data.train_x[i * batch : (i + 1) * batch],
                data.train_y[i * batch : (i + 1) * batch]) for i in range(steps + 2)]
    pipe = None
    if mode in ("sequential", "conadv"):
        tau = 0 if mode == "sequential" else 1
        pipe = ConAdv(model, attack, tau, backend="inline" if tau == 0 else "thread")
    times = []
    try:
        for t in range(steps):
            started = time.perf_counter()
            opt.zero_grad()
            if pipe is not None:
                pipe.begin_step(t, batches[t : t + pipe.staleness + 1])
                loss = adversarial_loss(model, batches[t], pipe.take(t))
            elif mode == "vanilla_clean_plus_adv":  # the weight pass alone, adversarial copy free
                x, y = batches[t]
                loss = 0.5 * CE(model(x), y) + 0.5 * CE(model(x.flip(0)), y.flip(0))
            else:
                x, y = batches[t]
                loss = CE(model(x), y)
            torch.autograd.backward(loss)
            opt.step()
            times.append(time.perf_counter() - started)
    finally:
        if pipe is not None:
            pipe.close()
    return statistics.median(times[WARMUP:])
