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

from dataclasses import dataclass

import torch

from crescendo_trainer.batching import Layout


@dataclass(frozen=True)
class ElasticSampler:
    dataset_size: int
    seed: int

    def permutation(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.dataset_size, generator=generator)

    def has_room(self, position: int, global_batch: int) -> bool:
        """Whether the epoch still holds a full step of `global_batch` samples."""
        return position + global_batch <= self.dataset_size

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
