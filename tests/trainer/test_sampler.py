"""The elastic sampler: no sample of an epoch skipped or repeated across world-size changes."""

from __future__ import annotations

import torch
from crescendo_trainer.batching import layout
from crescendo_trainer.sampler import ElasticSampler


def consume(sampler: ElasticSampler, epoch: int, position: int, batch: int, world: int,
            steps: int) -> tuple[list[int], int]:
    """Run `steps` steps at `world` ranks; the indices every rank took, and the new position."""
    perm = sampler.permutation(epoch)
    taken: list[int] = []
    for _ in range(steps):
        plan = layout(batch, world, per_gpu_max=7)
        for rank in range(world):
            for chunk in sampler.micro_batches(perm, position, plan, rank):
                taken.extend(chunk.tolist())
        position += batch
    return taken, position


def test_resuming_at_1_2_3_1_workers_covers_the_epoch_without_skip_or_repeat() -> None:
    sampler = ElasticSampler(dataset_size=1000, seed=5)
    taken, position = [], 0
    for world, batch, steps in [(1, 24, 10), (2, 48, 5), (3, 48, 5), (1, 96, 2)]:
        more, position = consume(sampler, 0, position, batch, world, steps)
        taken += more
    assert len(taken) == position == 24 * 10 + 48 * 5 + 48 * 5 + 96 * 2
    assert len(taken) == len(set(taken)), "a sample was repeated"
    assert taken == sampler.permutation(0)[:position].tolist(), "a sample was skipped"


def test_permutation_is_the_same_on_every_rank_and_new_each_epoch() -> None:
    a, b = ElasticSampler(500, seed=1), ElasticSampler(500, seed=1)
    assert torch.equal(a.permutation(3), b.permutation(3))
    assert not torch.equal(a.permutation(3), a.permutation(4))
    assert sorted(a.permutation(2).tolist()) == list(range(500))


def test_tail_shorter_than_the_batch_is_not_a_step() -> None:
    sampler = ElasticSampler(100, seed=0)
    assert sampler.has_room(64, 36)
    assert not sampler.has_room(65, 36)
