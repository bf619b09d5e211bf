"""The modelled GPU cluster the benches price a run's steps on: no GPU is lent to these runs.

The runs train on two shared CPU cores, where a step's time says little about a GPU cluster (a
CPU's step grows almost linearly with B; a small model on a GPU is launch-bound, so B is nearly
free up to the memory a GPU has). So each step the trainer took (its global batch B, from the
run trace) is priced on a modelled cluster instead, laid out as Crescendo's operator and trainers
would lay it out there:

    K = min(ceil(B / perGpuMax), maxGpus)      replicas of one GPU each (the operator's rule)
    a, m = step_layout(B, K, perGpuMax)        accumulation and micro-batch (batching.py; on one
                                               GPU a noise-scale policy needs two micro-batches)
    T_step = a·(α + β·m) + T_sync(K)           Pollux's T_iter with no overlap (throughput.py)
    T_sync(K) = 0 for K = 1, else a ring all-reduce of the fp32 gradient:
                2(K − 1)·ℓ + 2·(K − 1)/K · bytes / bandwidth

and a run's modelled time to a target is the sum of T_step over its steps up to the first
evaluation that meets it, plus, in a second figure, one rescale pause per change of K (checkpoint,
pods, rendezvous, NCCL set-up). Evaluation and data loading are left out: they are the same work
whatever the policy.

Every figure below is ASSUMED, not fitted: no device machine was lent to this task, so none was
measured. α is the per-micro-step cost that does not grow with the batch (eager PyTorch kernel
launches, ~5–10 µs each, for a forward, backward and optimizer step of a small network: one to a
few hundred launches); β is the per-sample compute at a pessimistic share of an H100's peak
(these models are far too narrow to fill its tensor cores); ℓ and the bandwidth are an NCCL ring
between single-GPU pods over 400 Gb/s InfiniBand (NDR, ~50 GB/s, taken at half); the rescale
pause is the README's measured CPU rescale (~4 s) plus CUDA and NCCL start-up.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from crescendo_trainer.batching import step_layout


@dataclass(frozen=True)
class ClusterModel:
    """One workload's step-time figures on the modelled cluster (all assumed, see above)."""

    hardware: str
    alpha_seconds: float  # per micro-step, independent of its size
    beta_seconds: float  # per sample of a micro-step
    per_gpu_max: int  # samples one GPU runs at once: B0, so the baseline holds one GPU
    max_gpus: int
    gradient_bytes: int  # fp32 gradient all-reduced once a step
    hop_latency_seconds: float = 8e-6  # per ring hop, NCCL over InfiniBand
    bytes_per_second: float = 25e9  # per GPU, half of NDR's 50 GB/s
    rescale_seconds: float = 10.0  # per change of the replica count

    def replicas(self, batch: int) -> int:
        return min(math.ceil(batch / self.per_gpu_max), self.max_gpus)

    def sync_seconds(self, replicas: int) -> float:
        if replicas <= 1:
            return 0.0
        hops = 2 * (replicas - 1)
        return hops * self.hop_latency_seconds + (
            hops / replicas * self.gradient_bytes / self.bytes_per_second
        )

    def step_seconds(self, batch: int, measures_noise: bool) -> float:
        replicas = self.replicas(batch)
        layout = step_layout(batch, replicas, self.per_gpu_max, pairs=measures_noise)
        compute = layout.accumulation * (self.alpha_seconds + self.beta_seconds * layout.max_micro)
        return compute + self.sync_seconds(replicas)

    def describe(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "assumed": True,
            "formula": "T_step = a·(alpha + beta·m) + T_sync(K), K = min(ceil(B/perGpuMax), "
                       "maxGpus), T_sync = 2(K−1)·hop_latency + 2(K−1)/K·gradient_bytes/"
                       "bytes_per_second; + rescale_seconds per change of K",
        }


@dataclass(frozen=True)
class ModelledTime:
    seconds: float  # steps only: compute and all-reduce
    rescales: int  # changes of K on the way
    with_rescales: float  # seconds + rescales × the pause


def modelled_time(
    model: ClusterModel, batches: list[int], measures_noise: bool
) -> ModelledTime:
    """The modelled time of the steps whose global batches are `batches`, in order."""
    seconds, rescales, last = 0.0, 0, None
    for batch in batches:
        seconds += model.step_seconds(batch, measures_noise)
        replicas = model.replicas(batch)
        if last is not None and replicas != last:
            rescales += 1
        last = replicas
    return ModelledTime(seconds, rescales, seconds + rescales * model.rescale_seconds)


# The three workloads' figures (one H100 80 GB SXM per pod). α counts launches of an eager step;
# β = FLOPs per sample (forward + backward ≈ 3 × forward) at the assumed effective rate.
CNN_FASHION_MNIST = ClusterModel(
    # ~10 k parameters, 2 MFLOP forward per 28×28 image: 6 MFLOP at 5 TFLOP/s ≈ 1.2 µs;
    # ~100 launches (two conv+BN+ReLU blocks, pool, linear, loss, SGD) ≈ 1 ms.
    hardware="H100 per replica (assumed)", alpha_seconds=1.0e-3, beta_seconds=1.2e-6,
    per_gpu_max=128, max_gpus=16, gradient_bytes=4 * 10_000,
)
MLP_MNIST5K = ClusterModel(
    # 0.1 M parameters, 0.2 MFLOP forward per image: 0.6 MFLOP at 10 TFLOP/s ≈ 0.06 µs;
    # ~40 launches (two linear layers, ReLU, loss, SGD) ≈ 0.4 ms.
    hardware="H100 per replica (assumed)", alpha_seconds=0.4e-3, beta_seconds=0.06e-6,
    per_gpu_max=32, max_gpus=16, gradient_bytes=4 * 101_770,
)
GPT_STDLIB = ClusterModel(
    # 0.44 M parameters, 64 tokens: 6·N·T ≈ 170 MFLOP per sequence at 20 TFLOP/s (bf16 on
    # 128-wide matmuls) ≈ 8.5 µs; ~400 launches (two blocks, LAMB per tensor) ≈ 3 ms.
    hardware="H100 per replica (assumed)", alpha_seconds=3.0e-3, beta_seconds=8.5e-6,
    per_gpu_max=16, max_gpus=16, gradient_bytes=4 * 440_000,
)
