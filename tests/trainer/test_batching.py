"""The resize rule: micro-batches, accumulation and loss scaling."""

from __future__ import annotations

import pytest
import torch
from crescendo_trainer.batching import layout, loss_scale
from torch import nn


@pytest.mark.parametrize(
    ("batch", "world", "cap", "accumulation"),
    [(128, 1, 128, 1), (128, 1, 32, 4), (256, 2, 64, 2), (128, 3, 32, 2), (100, 3, 33, 2)],
)
def test_layout_keeps_micro_batches_under_the_cap_with_fewest_accumulation_steps(
    batch: int, world: int, cap: int, accumulation: int
) -> None:
    plan = layout(batch, world, cap)
    assert plan.accumulation == accumulation
    assert plan.max_micro <= cap
    assert sum(plan.share(r) for r in range(world)) == batch
    assert all(len(sizes) == accumulation for sizes in plan.micro_sizes)
    shares = [plan.share(r) for r in range(world)]
    assert max(shares) - min(shares) <= 1


def test_layout_rejects_a_batch_smaller_than_the_world() -> None:
    with pytest.raises(ValueError, match="smaller than the world size"):
        layout(2, 3, 8)


def test_loss_scale_turns_summed_losses_into_the_global_mean_under_ddp_averaging() -> None:
    # Each rank backprops sum(loss) * world / B; DDP divides the summed gradients by world.
    per_sample_weight_after_ddp_mean = loss_scale(128, 4) / 4
    assert per_sample_weight_after_ddp_mean == pytest.approx(1 / 128)


def test_one_step_at_2b_equals_two_accumulated_micro_steps_at_b() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(64, 10), torch.randint(0, 3, (64,))
    model = nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 3))
    criterion = nn.CrossEntropyLoss(reduction="sum")

    def grads(plan_cap: int) -> list[torch.Tensor]:
        model.zero_grad()
        plan = layout(64, 1, plan_cap)
        start = 0
        for size in plan.micro_sizes[0]:
            part = slice(start, start + size)
            (criterion(model(x[part]), y[part]) * loss_scale(64, 1)).backward()
            start += size
        return [p.grad.clone() for p in model.parameters() if p.grad is not None]

    whole, accumulated = grads(64), grads(32)
    assert layout(64, 1, 32).accumulation == 2
    for a, b in zip(whole, accumulated, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
