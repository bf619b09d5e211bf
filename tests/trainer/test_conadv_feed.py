"""ConAdv in the elastic loop: the look-ahead follows the loop's samples, a change of B restarts
the pipeline, and the weight pass is the objective ½·L(clean) + ½·L(adversarial)."""

from __future__ import annotations

import pytest
import torch
from crescendo_spec.model import Adversarial
from crescendo_trainer.adversarial.feed import ConAdvFeed, conadv_backward
from crescendo_trainer.batching import layout
from crescendo_trainer.datasets import load_dataset
from crescendo_trainer.models import build_model
from crescendo_trainer.sampler import ElasticSampler
from torch import nn

EPSILON = 0.05


def test_upcoming_starts_skip_the_epoch_tail_as_the_loop_does() -> None:
    sampler = ElasticSampler(dataset_size=100, seed=0)
    assert sampler.upcoming_starts(0, 60, 30, 3) == [(0, 60), (1, 0), (1, 30)]
    assert sampler.upcoming_starts(2, 0, 50, 3) == [(2, 0), (2, 50), (3, 0)]
    with pytest.raises(ValueError, match="batch 101 exceeds the epoch"):
        sampler.upcoming_starts(0, 0, 101, 1)


def test_the_two_newest_permutations_are_kept_and_equal_fresh_ones() -> None:
    sampler, fresh = ElasticSampler(500, seed=3), ElasticSampler(500, seed=3)
    first = sampler.permutation(0)
    assert sampler.permutation(0) is first, "one randperm per epoch"
    sampler.permutation(1)
    sampler.permutation(2)
    assert torch.equal(sampler.permutation(0), fresh.permutation(0))
    assert sampler.permutation(0) is not first, "epoch 0 was dropped for epochs 1 and 2"


def test_copies_are_of_this_ranks_micro_batches_and_a_change_of_b_restarts_the_pipeline() -> None:
    data = load_dataset("digits")
    sampler = ElasticSampler(len(data.train_y), seed=1)
    torch.manual_seed(0)
    model = build_model("mlp", data.input_shape, data.num_classes)
    spec = Adversarial(method="conadv", epsilon=EPSILON, steps=1, staleness=2)
    feed = ConAdvFeed(spec, model, sampler, data, torch.device("cpu"), seed=7)
    epoch, position, step, changed_at = 0, 0, 0, 0
    epochs_seen = set()
    while step < 60:
        batch = 96 if step < 30 else 192
        if step == 30:
            changed_at = step
        if not sampler.has_room(position, batch):
            epoch, position = epoch + 1, 0
        plan = layout(batch, world_size=2, per_gpu_max=32)
        chunks = sampler.micro_batches(sampler.permutation(epoch), position, plan, rank=1)
        copies = feed.adversarial_chunks(step, epoch, position, plan, rank=1)
        assert [len(c) for c in copies] == [len(c) for c in chunks]
        for chunk, copy in zip(chunks, copies, strict=True):
            # The copy of another sample would differ by far more than ε somewhere.
            assert float((copy - data.train_x[chunk]).abs().max()) <= EPSILON + 1e-6
        epochs_seen.add(epoch)
        step, position = step + 1, position + batch
    feed.close()
    assert len(epochs_seen) > 2, "the look-ahead never crossed an epoch boundary"
    versions = dict(feed.pipeline.history)
    assert all(versions[t] == max(t - 2, 0) for t in range(30))
    assert all(versions[t] == max(t - 2, changed_at) for t in range(30, 60))


def test_the_weight_pass_is_the_gradient_of_half_clean_plus_half_adversarial() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    reference = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    reference.load_state_dict(model.state_dict())
    x, y = torch.rand(8, 1, 4, 4), torch.randint(0, 3, (8,))
    adversarial = x + 0.05
    criterion = nn.CrossEntropyLoss(reduction="sum")
    loss = conadv_backward(model, criterion, (x, y), adversarial, scale=0.25, sync=True)

    objective = 0.5 * (criterion(reference(x), y) + criterion(reference(adversarial), y))
    (0.25 * objective).backward()
    assert torch.allclose(loss, objective.detach())
    for mine, theirs in zip(model.parameters(), reference.parameters(), strict=True):
        assert mine.grad is not None and theirs.grad is not None
        assert torch.allclose(mine.grad, theirs.grad, atol=1e-6)
