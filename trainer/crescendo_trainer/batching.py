"""The resize rule: how a global batch B is laid out over the processes (ALGORITHMS.md §0).

B = Σ over ranks and micro-steps of the micro-batch sizes. Each rank takes an equal share of
B (shares differ by at most one sample when B is not a multiple of the world size), split into
the fewest micro-batches that keep every micro-batch ≤ perGpuMax; every rank runs the same
number of micro-steps (DDP needs the same number of backward passes everywhere), so a rank
with a smaller share may get one micro-batch of one fewer sample. The loss of a micro-batch
is the SUM of per-sample losses times world/B: DDP averages gradients over the world, so the
update is exactly the mean over the B samples, whatever the split. That is what makes one step
at 2B equal two accumulated steps at B (on a BatchNorm-free model).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Layout:
    global_batch: int
    world_size: int
    accumulation: int  # micro-steps per optimizer step (the same on every rank)
    micro_sizes: tuple[tuple[int, ...], ...]  # [rank][micro-step] -> samples

    @property
    def max_micro(self) -> int:
        return max(max(sizes) for sizes in self.micro_sizes)

    def share(self, rank: int) -> int:
        return sum(self.micro_sizes[rank])


def _split(total: int, parts: int) -> tuple[int, ...]:
    """`total` into `parts` near-equal integers, larger ones first."""
    base, extra = divmod(total, parts)
    return tuple(base + (1 if i < extra else 0) for i in range(parts))


def layout(global_batch: int, world_size: int, per_gpu_max: int) -> Layout:
    """Micro-batches and accumulation steps for B on `world_size` processes."""
    if global_batch < world_size:
        raise ValueError(
            f"global batch {global_batch} is smaller than the world size {world_size}: "
            "every process needs at least one sample (raise batch.initial or lower replicas.max)"
        )
    if per_gpu_max < 1:
        raise ValueError(f"batch.perGpuMax must be >= 1 (got {per_gpu_max})")
    shares = _split(global_batch, world_size)
    accumulation = math.ceil(shares[0] / per_gpu_max)
    micro = tuple(_split(share, accumulation) for share in shares)
    return Layout(global_batch, world_size, accumulation, micro)


def loss_scale(global_batch: int, world_size: int) -> float:
    """Multiplier of a micro-batch's summed loss so DDP's mean gives the mean over B."""
    return world_size / global_batch


def step_layout(global_batch: int, world_size: int, per_gpu_max: int, pairs: bool) -> Layout:
    """The layout a step runs with. `pairs`: the noise scale is measured on one worker, from the
    step's own micro-batches at the same weights (noise.MicroBatchNorms), so a step of B ≥ 2 on
    one process has two micro-batches at least."""
    limit = per_gpu_max
    if pairs and world_size == 1 and global_batch >= 2:
        limit = min(limit, -(-global_batch // 2))
    return layout(global_batch, world_size, limit)
