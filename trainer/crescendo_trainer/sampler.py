"""The elastic sampler: which samples each rank takes, by global sample index.

Every epoch has one permutation of the training set, seeded by (seed, epoch) and the same on
every rank and at every world size. The only state is the epoch and the `position`: how many
samples of the permutation the completed steps consumed. A step at global batch B takes
permutation[position : position + B]; each rank takes a contiguous part of that slice sized
by the layout (batching.py), split into its micro-batches. After a restart at another world
size the slice boundaries are the same, so no sample of the epoch is skipped or repeated
(AdaptDL's sampler resumes the same way). The epoch's tail that is shorter than B is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from crescendo_trainer.batching import Layout


@dataclass(frozen=True)
class ElasticSampler:
    dataset_size: int
    seed: int
    # The two newest epochs' permutations: one randperm per epoch, not per step, and ConAdv's
    # look-ahead may reach into the next epoch. Callers only index them.
    _cache: dict[int, torch.Tensor] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def permutation(self, epoch: int) -> torch.Tensor:
        if epoch not in self._cache:
            if len(self._cache) >= 2:
                del self._cache[min(self._cache)]
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._cache[epoch] = torch.randperm(self.dataset_size, generator=generator)
        return self._cache[epoch]

    def has_room(self, position: int, global_batch: int) -> bool:
        """Whether the epoch still holds a full step of `global_batch` samples."""
        return position + global_batch <= self.dataset_size

    def upcoming_starts(
        self, epoch: int, position: int, global_batch: int, count: int
    ) -> list[tuple[int, int]]:
        """(epoch, position) of this step and the `count − 1` after it, if B stays the same.

        A step starts where the last one ended unless the epoch has no room left for it; then it
        starts the next epoch at 0, as the loop does. ConAdv makes the adversarial copies of
        these steps' batches ahead of time.
        """
        if global_batch > self.dataset_size:
            raise ValueError(
                f"batch {global_batch} exceeds the epoch ({self.dataset_size} samples)"
            )
        starts: list[tuple[int, int]] = []
        while len(starts) < count:
            if not self.has_room(position, global_batch):
                epoch, position = epoch + 1, 0
            starts.append((epoch, position))
            position += global_batch
        return starts

    def micro_batches(
        self, permutation: torch.Tensor, position: int, layout: Layout, rank: int
    ) -> list[torch.Tensor]:
        """The sample indices of `rank`'s micro-batches for the step starting at `position`."""
        if not self.has_room(position, layout.global_batch):
            raise ValueError(
                f"position {position} + batch {layout.global_batch} exceeds the epoch "
                f"({self.dataset_size} samples)"
            )
        start = position + sum(layout.share(r) for r in range(rank))
        chunks = []
        for size in layout.micro_sizes[rank]:
            chunks.append(permutation[start : start + size])
            start += size
        return chunks
