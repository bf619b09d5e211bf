"""The workloads bench/algorithms.py and the policy-quality test train: each policy's job spec,
with the papers' epoch-based settings scaled to the run's length.

Three workloads, each run by the real trainer (bench/trainer_runs.py):
- `fashion-mnist-cnn`: the built-in `cnn` on full Fashion-MNIST (60k / 10k), B0 128 → 2048;
- `mnist5k-mlp`: the built-in `mlp` on MNIST-5k (4k / 1k), B0 32 → 512;
- `lm-gpt`: bench/lm_ramp.py's language model (its job spec, imported), B0 16 → 64 sequences.

The runs are short, so every epoch-based setting of a paper is scaled by (run epochs ÷ paper
epochs) and rounded, at least 1, and the JSON says each beside the paper's value:
- the step decay of every run's LR (ABS's ResNet baseline: ×0.2 at epochs 30/60/80 of 90);
- AdaBatch's resize period (every 20 of 100 epochs, 5 phases of ×2: 128 → 2048);
- ABS/ABSA's duration rule (grow anyway after 10 epochs without an increase, of 90).
B_max is 16 × B0 everywhere (AdaBatch's 128 → 2048; ABS's example goes to 128 × B0, which would
leave a few steps an epoch on these data sets). Everything else is the spec's default: gns's and
goodput's cooldowns and gains, ABSA's κ, adversarial share and ε, the Hessian's batch. Learning
rates scale linearly with B for SGD (the papers' rule) and as lm_ramp.py sets them for the LM.
The trainer gets perGpuMax = B_max, so a run on one CPU process never accumulates and goodput
plans every candidate on the one process it has (K = 1).

`--smoke` swaps in digits for both classification workloads and a few hundred LM sequences, with
two policies each: the code path of every figure, in seconds, not its values.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import lm_ramp
from bench.cluster_model import CNN_FASHION_MNIST, GPT_STDLIB, MLP_MNIST5K, ClusterModel

API = {"apiVersion": "crescendo.dev/v1alpha1", "kind": "AdaptiveBatchJob"}
CLASSIFICATION_POLICIES = ("fixed_b0", "adabatch", "abs", "absa", "gns", "goodput")
LM_POLICIES = ("fixed_b0", "schedule", "gns", "goodput")
NOISE_POLICIES = frozenset({"gns", "goodput"})  # they measure the noise scale on every step
# The papers' epoch-based settings and their runs' lengths.
PAPER_LR_DECAY_EPOCHS, PAPER_EPOCHS_ABS = (30, 60, 80), 90
PAPER_RESIZE_EVERY, PAPER_EPOCHS_ADABATCH = 20, 100
PAPER_DURATION, LR_DECAY = 10, 0.2


def scaled(paper_value: int, paper_epochs: int, epochs: int) -> int:
    """An epoch count of a paper's run, scaled to a run of `epochs`: rounded, at least 1."""
    return max(1, round(paper_value * epochs / paper_epochs))


@dataclass(frozen=True)
class Workload:
    name: str
    model: str
    dataset: str
    metric: str  # "accuracy" (higher is better) or "val_loss" (lower is better)
    b0: int
    b_max: int
    policies: tuple[str, ...]
    seeds: tuple[int, ...]
    cluster: ClusterModel
    epochs: int | None = None  # classification
    lr: float = 0.05  # SGD momentum 0.9 at B0, linear scaling
    train_samples: int = 0  # classification: for the schedule's ramp
    language: argparse.Namespace | None = None  # lm_ramp.spec's settings

    @property
    def lower_is_better(self) -> bool:
        return self.metric == "val_loss"

    @property
    def decay_epochs(self) -> list[int]:
        assert self.epochs is not None
        return sorted({scaled(e, PAPER_EPOCHS_ABS, self.epochs) for e in PAPER_LR_DECAY_EPOCHS})

    @property
    def resize_every(self) -> int:
        assert self.epochs is not None
        return scaled(PAPER_RESIZE_EVERY, PAPER_EPOCHS_ADABATCH, self.epochs)

    @property
    def duration(self) -> int:
        assert self.epochs is not None
        return scaled(PAPER_DURATION, PAPER_EPOCHS_ABS, self.epochs)

    def batch_policy(self, policy: str) -> dict[str, Any]:
        """The `spec.batch` keys that choose and configure `policy`."""
        if self.language is not None:
            ramp = lm_ramp.policies(self.language.ramp_tokens)
            named = {"fixed_b0": ramp["fixed"], "schedule": ramp["ramp"], "gns": ramp["gns"]}
            return named.get(policy, {"policy": policy})
        if policy == "fixed_b0":
            return {"policy": "fixed"}
        if policy == "adabatch":
            return {"policy": policy, "adabatch": {"resizeEveryEpochs": self.resize_every}}
        if policy in ("abs", "absa"):
            return {"policy": policy, "absa": {"durationEpochs": self.duration}}
        if policy == "schedule":  # over the first half of the samples, as the LM's ramp
            assert self.epochs is not None
            half = self.epochs * self.train_samples // 2
            return {"policy": policy, "schedule": {"rampUnits": str(half), "unit": "samples"}}
        return {"policy": policy}

    def job(self, policy: str, seed: int) -> dict[str, Any]:
        """The AdaptiveBatchJob of one run (the runner sets its checkpoint dir)."""
        if self.language is not None:
            settings = argparse.Namespace(**{**vars(self.language), "seed": seed})
            return lm_ramp.spec(self.batch_policy(policy), settings, Path("unset"))
        return {
            **API,
            "metadata": {"name": f"{self.name}-{policy}-{seed}"},
            "spec": {
                "gpusPerReplica": 0, "model": self.model, "dataset": self.dataset,
                "epochs": self.epochs, "seed": seed,
                "batch": {"initial": self.b0, "max": self.b_max, "perGpuMax": self.b_max,
                          **self.batch_policy(policy)},
                "learningRate": {"base": self.lr, "scaling": "linear",
                                 "decayEpochs": self.decay_epochs, "decayFactor": LR_DECAY},
                "optimizer": {"name": "sgd", "momentum": 0.9},
                "checkpoint": {"everySteps": 1_000_000},
                "logEverySteps": 50,
            },
        }

    def settings(self) -> dict[str, Any]:
        """What the JSON says about the runs, with each scaled setting beside the paper's."""
        out: dict[str, Any] = {"model": self.model, "dataset": self.dataset, "b0": self.b0,
                               "b_max": self.b_max, "seeds": list(self.seeds),
                               "policies": list(self.policies), "trainer_per_gpu_max": self.b_max}
        if self.language is not None:
            return {**out, **vars(self.language), "tokens": self.language.samples * lm_ramp.SEQ_LEN,
                    "optimizer": "lamb", "seq_len": lm_ramp.SEQ_LEN,
                    "not_run": {"adabatch": "epoch-based; the run is a fraction of one epoch",
                                "abs": "checks λ at epoch ends; the run ends before the first",
                                "absa": "adversarial inputs need pixels (the spec refuses it)"},
                    "spec_from": "bench/lm_ramp.py spec(), policies()"}
        return {
            **out, "epochs": self.epochs, "lr_at_b0": self.lr, "lr_scaling": "linear",
            "optimizer": "sgd momentum 0.9",
            "lr_decay_epochs": self.decay_epochs, "lr_decay_factor": LR_DECAY,
            "paper_lr_decay_epochs": f"{list(PAPER_LR_DECAY_EPOCHS)} of {PAPER_EPOCHS_ABS} "
                                     "(ABS's ResNet baseline, ×0.2)",
            "adabatch_resize_every_epochs": self.resize_every,
            "paper_adabatch_resize_every_epochs": f"{PAPER_RESIZE_EVERY} of "
                                                  f"{PAPER_EPOCHS_ADABATCH}",
            "absa_duration_epochs": self.duration,
            "paper_absa_duration_epochs": f"{PAPER_DURATION} of {PAPER_EPOCHS_ABS}",
            "evaluation": "test accuracy at each epoch end (the built-in trainer's rule)",
        }


def classification(
    name: str, model: str, dataset: str, *, b0: int, epochs: int, seeds: tuple[int, ...],
    cluster: ClusterModel, train_samples: int, policies: tuple[str, ...] = CLASSIFICATION_POLICIES,
) -> Workload:
    return Workload(name, model, dataset, "accuracy", b0, 16 * b0, policies, seeds, cluster,
                    epochs=epochs, train_samples=train_samples)


def language(seeds: tuple[int, ...], *, samples: int, eval_every: int, eval_sequences: int,
             policies: tuple[str, ...] = LM_POLICIES) -> Workload:
    # lm_ramp's settings but the budget: its 64k sequences take ~5 min a run on these cores, so
    # the run is a quarter as long, and the ramp (lm_ramp: 2M of its 4.1M tokens) keeps its share.
    tokens = samples * lm_ramp.SEQ_LEN
    settings = argparse.Namespace(
        samples=samples, ramp_tokens=f"{tokens // 2_000}K", lr=0.004, lr_scaling="sqrt",
        b_max=4 * lm_ramp.B0, eval_every=eval_every, eval_sequences=eval_sequences)
    return Workload("lm-gpt", "gpt", "python-stdlib", "val_loss", lm_ramp.B0, settings.b_max,
                    policies, seeds, GPT_STDLIB, language=settings)


def default_workloads(fashion_seeds: tuple[int, ...], small_seeds: tuple[int, ...],
                      lm_seeds: tuple[int, ...]) -> list[Workload]:
    return [
        # 5 epochs: the baseline's last LR decay (×0.2 at epoch 4) leaves it flat (≤ one test-set
        # standard error between its last two evaluations, checked in the JSON: `plateau`).
        classification("fashion-mnist-cnn", "cnn", "fashion-mnist", b0=128, epochs=5,
                       seeds=fashion_seeds, cluster=CNN_FASHION_MNIST, train_samples=60_000),
        classification("mnist5k-mlp", "mlp", "mnist5k", b0=32, epochs=20, seeds=small_seeds,
                       cluster=MLP_MNIST5K, train_samples=4_000),
        language(lm_seeds, samples=16_000, eval_every=25, eval_sequences=256),
    ]


def smoke_workloads() -> list[Workload]:
    """The code path of every figure on digits and a few hundred LM sequences: seconds."""
    fashion = classification("fashion-mnist-cnn", "cnn", "digits", b0=32, epochs=2, seeds=(0,),
                             cluster=CNN_FASHION_MNIST, train_samples=1_497,
                             policies=("fixed_b0", "absa"))
    small = classification("mnist5k-mlp", "mlp", "digits", b0=32, epochs=2, seeds=(0,),
                           cluster=MLP_MNIST5K, train_samples=1_497,
                           policies=("fixed_b0", "gns"))
    lm = language((0,), samples=320, eval_every=5, eval_sequences=16,
                  policies=("fixed_b0", "schedule"))
    return [fashion, small, lm]


def accuracy_tolerance(accuracy: float, test_samples: int) -> float:
    """One binomial standard error of an accuracy measured on `test_samples` images: the target
    sits that far below the baseline, so a policy is not failed by test-set noise (0.3 points on
    Fashion-MNIST's 10k, the old bench's fixed 0.3; about 0.7 on MNIST-5k's 1k)."""
    return math.sqrt(accuracy * (1.0 - accuracy) / test_samples)
