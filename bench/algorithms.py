"""Crescendo's algorithms on full Fashion-MNIST, one run each: steps and time to a target accuracy.

A single-process harness that drives the trainer's components (policies, LR rule, optimizers,
attacks, Hessian measurement, ConAdv) on the built-in `cnn`; it is not a second trainer loop
(no DDP, no checkpoints, no sampler). Prints a table and writes JSON (`--out`).

Scale (2 shared CPU cores, ≤ ~20 min): `--epochs` (default 6) epochs per run, B0 = 128,
B_max = 2048, lr 0.05 at B0 with linear scaling and ×0.2 at epoch 4 for every run. The papers'
epoch-based settings are scaled to the short run and said so in the JSON under `settings`:
AdaBatch resizes every epoch (paper: every 20 of 100), ABS/ABSA grow anyway after 2 epochs
without an increase (paper: 10 of ~90), Neumann does 1 epoch of SGD first and resets every 2
epochs, doubling (paper: 5 and 10). The target is the fixed-B0 baseline's final test accuracy
minus 0.3 points; test accuracy is evaluated every half epoch.

    .venv/bin/python bench/algorithms.py --out bench/out/algorithms.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from crescendo_spec.model import (
    AbsaSettings,
    AdaBatchSettings,
    Adversarial,
    Batch,
    GnsSettings,
    LearningRate,
    NeumannSettings,
)
from crescendo_spec.model import Optimizer as OptimizerSpec
from crescendo_trainer.adversarial import ConAdv, adversarial_loss, conadv_attack, mix_fgsm
from crescendo_trainer.datasets import load_dataset
from crescendo_trainer.hessian import seeded_batch
from crescendo_trainer.lr import LrRule
from crescendo_trainer.measurements import CurvatureProbe, Measurements
from crescendo_trainer.models import build_model
from crescendo_trainer.optim import Neumann, build_optimizer
from crescendo_trainer.policies import Signals, build_policy
from crescendo_trainer.policies.base import HESSIAN_EIGENVALUE
from torch import Tensor, nn

B0, BMAX, LR, DECAY_EPOCHS, DECAY = 128, 2048, 0.05, [4], 0.2
CE = nn.functional.cross_entropy


@dataclass
class Run:
    name: str
    curve: list[tuple[int, float, float]] = field(default_factory=list)  # (steps, seconds, acc)
    step_seconds: list[float] = field(default_factory=list)
    hessian_seconds: float = 0.0
    epoch_seconds: list[float] = field(default_factory=list)
    decisions: list[str] = field(default_factory=list)
    batches: list[int] = field(default_factory=list)


@torch.no_grad()
def accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    was = model.training
    model.eval()
    correct = sum(
        int((model(x[i : i + 2000]).argmax(1) == y[i : i + 2000]).sum())
        for i in range(0, len(y), 2000)
    )
    model.train(was)
    return correct / len(y)


def train(
    name: str, policy_name: str, optimizer: str, epochs: int, data: Any, initial: int = B0
) -> Run:
    torch.manual_seed(0)
    model = build_model("cnn", data.input_shape, data.num_classes)
    batch = Batch(
        initial=initial,
        max=BMAX,
        per_gpu_max=BMAX,
        policy=policy_name,
        adabatch=AdaBatchSettings(factor=2, resize_every_epochs=1),
        absa=AbsaSettings(duration_epochs=2),
        gns=GnsSettings(cooldown_steps=100, ema=0.95),
    )
    adversarial = Adversarial(epsilon=0.005, ratio=0.2)
    policy = build_policy(batch, epochs=epochs, adversarial=adversarial)
    rule = LrRule.from_spec(
        LearningRate(
            base=LR,
            scaling="linear",
            reference_batch=B0,
            decay_epochs=DECAY_EPOCHS,
            decay_factor=DECAY,
        ),
        B0,
    )
    spec = OptimizerSpec(
        name=optimizer,
        momentum=0.9,
        neumann=NeumannSettings(sgd_warmup_epochs=1, reset_epochs=2),
    )
    opt = build_optimizer(spec, model.parameters(), LR)
    measurements = Measurements(policy, batch)
    hx, hy = seeded_batch(data.train_x, data.train_y, 128, seed=0)
    measurements.probe = CurvatureProbe(model, CE, hx, hy)
    run, gb, step, wall = Run(name), initial, 0, 0.0
    n = len(data.train_y)
    half = n // 2
    for epoch in range(epochs):
        if isinstance(opt, Neumann):
            opt.set_epoch(epoch)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(epoch))
        pos, next_eval, epoch_start = 0, half, time.perf_counter()
        while pos + gb <= n:
            started = time.perf_counter()
            idx = order[pos : pos + gb]
            x, y = data.train_x[idx], data.train_y[idx]
            ratio = policy.adversarial_ratio(gb, epoch)
            if ratio:
                x = mix_fgsm(model, x, y, ratio=ratio, block=B0, epsilon=adversarial.epsilon).inputs
            for group in opt.param_groups:
                group["lr"] = rule(step, epoch, gb)
            opt.zero_grad()
            # As the trainer does on one worker: two micro-batches when the noise scale is
            # measured (its same-weights pair), the step's gradient their weighted mean.
            parts = 2 if measurements.splits_steps else 1
            params = list(model.parameters())
            loss = torch.zeros(())
            for xs, ys in zip(x.chunk(parts), y.chunk(parts), strict=True):
                part = CE(model(xs), ys) * (len(ys) / gb)
                torch.autograd.backward(part)
                measurements.after_micro(params, len(ys), gb)
                loss = loss + part.detach()
            measurements.observe_gradients(params, gb, gb)
            opt.step()
            step, pos = step + 1, pos + gb
            end = pos + gb > n
            h0 = time.perf_counter()
            measured = measurements.take(step, epoch, end)  # the trainer's one path
            if HESSIAN_EIGENVALUE in measured:
                run.hessian_seconds += time.perf_counter() - h0
            decision = policy.decide(Signals(step, epoch, end, gb, float(loss.detach()), measured))
            if decision.global_batch != gb:
                run.decisions.append(f"step {step}: {decision.reason}")
                gb = decision.global_batch
            run.step_seconds.append(time.perf_counter() - started)
            wall += time.perf_counter() - started
            if pos >= next_eval or end:
                with opt.exported_weights() if isinstance(opt, Neumann) else nullcontext():
                    acc = accuracy(model, data.test_x, data.test_y)
                run.curve.append((step, wall, acc))
                next_eval += half
        run.epoch_seconds.append(time.perf_counter() - epoch_start)
        run.batches.append(gb)
        print(f"  {name}: epoch {epoch} B={gb} acc={run.curve[-1][2]:.4f} steps={step}", flush=True)
    return run


def _subset(data: Any, limit: int) -> Any:
    import dataclasses

    return dataclasses.replace(
        data,
        train_x=data.train_x[:limit],
        train_y=data.train_y[:limit],
        test_x=data.test_x[: limit // 4],
        test_y=data.test_y[: limit // 4],
    )


def step_times(data: Any, steps: int = 40) -> dict[str, float]:
    """Median step time at B0, one intra-op thread: vanilla (SGD momentum), sequential adversarial
    (τ = 0, inline), ConAdv (τ = 1, worker thread), the clean+adversarial weight pass alone, and
    vanilla with the Neumann update. Back to back in one process, so the comparison sees the same
    machine load (the training runs' own step times are too exposed to other users' jobs)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one core for the weight pass, the other for ConAdv's worker
    attack = conadv_attack(
        epsilon=9 / 255,
        step_size=None,
        steps=1,
        random_start=True,
        targeted=True,
        num_classes=data.num_classes,
    )
    out: dict[str, float] = {}
    for mode in ("vanilla", "sequential", "conadv", "vanilla_clean_plus_adv", "neumann"):
        torch.manual_seed(0)
        model = build_model("cnn", data.input_shape, data.num_classes)
        opt: torch.optim.Optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        if mode == "neumann":  # vanilla's step with the Neumann update instead of SGD momentum
            opt = Neumann(model.parameters(), 0.05, sgd_warmup_epochs=0)
        batches = [
            (data.train_x[i * B0 : (i + 1) * B0], data.train_y[i * B0 : (i + 1) * B0])
            for i in range(steps + 2)
        ]
        pipe = None
        if mode in ("sequential", "conadv"):
            tau = 0 if mode == "sequential" else 1
            pipe = ConAdv(model, attack, tau, backend="inline" if tau == 0 else "thread")
        times = []
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
        if pipe is not None:
            pipe.close()
        out[mode] = statistics.median(times[3:])
    torch.set_num_threads(threads)
    return out


def steps_to(run: Run, target: float) -> tuple[int | None, float | None]:
    for steps, seconds, acc in run.curve:
        if acc >= target:
            return steps, seconds
    return None, None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--limit", type=int, default=0, help="train samples (smoke runs only)")
    args = parser.parse_args()
    started = time.perf_counter()
    data = load_dataset("fashion-mnist")
    if args.limit:  # smoke runs only
        data = _subset(data, args.limit)
    plan = [
        ("fixed_b0", "fixed", "sgd"),
        ("fixed_bmax", "fixed", "sgd"),
        ("adabatch", "adabatch", "sgd"),
        ("abs", "abs", "sgd"),
        ("absa", "absa", "sgd"),
        ("gns", "gns", "sgd"),
        ("neumann", "fixed", "neumann"),
    ]
    runs: dict[str, Run] = {}
    for name, policy, optimizer in plan:
        # fixed_bmax: the fixed large batch, with the linearly scaled LR (0.8 at 2048).
        initial = BMAX if name == "fixed_bmax" else B0
        runs[name] = train(name, policy, optimizer, args.epochs, data, initial)
    runs["sgd_momentum"] = runs["fixed_b0"]  # the same run: SGD momentum 0.9 at B0
    target = runs["fixed_b0"].curve[-1][2] - 0.003
    times = step_times(data)
    table: dict[str, Any] = {
        "steps_to_target": {},
        "seconds_to_target": {},
        "final_accuracy": {},
        "total_steps": {},
        "final_batch": {},
    }
    for name, run in runs.items():
        steps, seconds = steps_to(run, target)
        table["steps_to_target"][name] = steps
        table["seconds_to_target"][name] = None if seconds is None else round(seconds, 2)
        table["final_accuracy"][name] = run.curve[-1][2]
        table["total_steps"][name] = run.curve[-1][0]
        table["final_batch"][name] = run.batches[-1]
    absa = runs["absa"]
    result = {
        **table,
        "target_accuracy": target,
        "conadv_step_ratio": times["conadv"] / times["vanilla"],
        "sequential_adv_step_ratio": times["sequential"] / times["vanilla"],
        "conadv_vs_same_weight_pass_ratio": times["conadv"] / times["vanilla_clean_plus_adv"],
        "step_seconds": times,
        "neumann_step_ratio": times["neumann"] / times["vanilla"],
        "neumann_step_ratio_in_training_runs": statistics.median(runs["neumann"].step_seconds)
        / statistics.median(runs["sgd_momentum"].step_seconds),
        "hessian_share_of_epoch": absa.hessian_seconds / sum(absa.epoch_seconds),
        "decisions": {k: v.decisions for k, v in runs.items() if v.decisions},
        "dataset": "fashion-mnist (60k train / 10k test, /usr/share/datasets/fashion-mnist)",
        "settings": {
            "epochs": args.epochs,
            "b0": B0,
            "bmax": BMAX,
            "lr_at_b0": LR,
            "decay_epochs": DECAY_EPOCHS,
            "decay": DECAY,
            "model": "cnn",
            "adabatch_resize_every_epochs": 1,
            "absa_duration_epochs": 2,
            "gns_cooldown_steps": 100,
            "neumann_sgd_warmup_epochs": 1,
            "neumann_reset_epochs": 2,
            "threads": torch.get_num_threads(),
        },
        "runtime_seconds": time.perf_counter() - started,
    }
    print(f"\ntarget accuracy {target:.4f} (fixed-B0 final − 0.3 points)")
    print(
        f"{'run':<14}{'steps→target':>14}{'s→target':>10}{'final acc':>11}{'steps':>8}{'B end':>7}"
    )
    for name in runs:
        s = table["steps_to_target"][name]
        w = table["seconds_to_target"][name]
        print(
            f"{name:<14}{s if s is not None else '—':>14}{w if w is not None else '—':>10}"
            f"{table['final_accuracy'][name]:>11.4f}{table['total_steps'][name]:>8}"
            f"{table['final_batch'][name]:>7}"
        )
    for key in (
        "conadv_step_ratio",
        "sequential_adv_step_ratio",
        "conadv_vs_same_weight_pass_ratio",
        "neumann_step_ratio",
        "hessian_share_of_epoch",
    ):
        print(f"{key}: {result[key]:.3f}")
    print(f"runtime {result['runtime_seconds']:.0f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(result, indent=2, default=lambda v: None if math.isnan(v) else v)
    )


if __name__ == "__main__":
    main()
