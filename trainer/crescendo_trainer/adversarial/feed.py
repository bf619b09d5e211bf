"""ConAdv in the elastic loop: which batches its pipeline makes ahead, and the weight pass.

Owns the wiring between ConAdv's step protocol (conadv.py) and the loop's sampler and layout.
At step t the pipeline needs this rank's batches of steps t..t+τ: the sampler says where those
steps start while B stays the same (ElasticSampler.upcoming_starts), the layout says which of
each step's samples are this rank's. When a decision changes B the layout changes and the
batches made ahead hold the wrong samples, so they are discarded: the step after a change, like
the first step after a restart, uses a copy made with its own weights, and the pipeline is τ
steps deep again from the next step on. Nothing of the pipeline is checkpointed; a restart (at
any world size) starts it again from the restored weights.

The weight pass is ConAdv's objective ½·L(clean) + ½·L(adversarial copy), as two backward passes
per micro-batch: DDP allows one forward per backward, and the two gradients add up to the
objective's. Only the last backward of a step all-reduces, as with any accumulation.
"""

from __future__ import annotations

import logging

import torch
from crescendo_spec.model import Adversarial
from torch import Tensor, nn

from crescendo_trainer import distributed
from crescendo_trainer.adversarial.conadv import ConAdv, conadv_attack
from crescendo_trainer.batching import Layout
from crescendo_trainer.datasets import TensorDataset
from crescendo_trainer.sampler import ElasticSampler

log = logging.getLogger("crescendo_trainer")

# ConAdv weighs the clean batch and its adversarial copy equally: half of what the weights are
# trained on is adversarial (the trainer's crescendo_trainer_adversarial_ratio).
CONADV_RATIO = 0.5


class ConAdvFeed:
    """Feeds ConAdv's pipeline this rank's future batches and hands back the adversarial copies."""

    def __init__(
        self,
        spec: Adversarial,
        module: nn.Module,
        sampler: ElasticSampler,
        data: TensorDataset,
        device: torch.device,
        seed: int,
    ) -> None:
        attack = conadv_attack(
            epsilon=spec.epsilon, step_size=spec.step_size, steps=spec.steps,
            random_start=spec.random_start, targeted=spec.targeted, num_classes=data.num_classes,
        )
        self.pipeline = ConAdv(module, attack, spec.staleness, seed=seed)
        log.info("ConAdv: staleness %d, attack made on the %s backend",
                 spec.staleness, self.pipeline.backend)
        self.sampler, self.data, self.device = sampler, data, device
        self._layout: Layout | None = None

    def adversarial_chunks(
        self, step: int, epoch: int, position: int, plan: Layout, rank: int
    ) -> list[Tensor]:
        """The adversarial copies of `rank`'s micro-batches of `step` (made with w_{step−τ},
        or with newer weights in the τ steps after a start or a change of B)."""
        if plan != self._layout:
            self.pipeline.discard()
            self._layout = plan
        starts = self.sampler.upcoming_starts(
            epoch, position, plan.global_batch, self.pipeline.staleness + 1
        )
        # Only the steps not started yet are gathered (one per step once the pipeline is full).
        self.pipeline.begin_step_on_demand(
            step, lambda wanted: self._local_batch(*starts[wanted - step], plan, rank)
        )
        made = self.pipeline.take(step)
        return list(torch.split(made.inputs, list(plan.micro_sizes[rank])))

    def close(self) -> None:
        self.pipeline.close()

    def _local_batch(
        self, epoch: int, position: int, plan: Layout, rank: int
    ) -> tuple[Tensor, Tensor]:
        chunks = self.sampler.micro_batches(self.sampler.permutation(epoch), position, plan, rank)
        index = torch.cat(chunks)
        return self.data.train_x[index].to(self.device), self.data.train_y[index].to(self.device)


def conadv_backward(
    model: nn.Module,
    criterion: nn.Module,
    clean: tuple[Tensor, Tensor],
    adversarial: Tensor,
    scale: float,
    sync: bool,
) -> Tensor:
    """Back-propagate ½·L(clean) + ½·L(adversarial) of one micro-batch (losses summed over its
    samples, times `scale`); all-reduce only when `sync`. Returns the unscaled objective."""
    inputs, labels = clean
    with distributed.no_sync_unless(False, model):
        clean_loss: Tensor = criterion(model(inputs), labels)
        (0.5 * scale * clean_loss).backward()  # type: ignore[no-untyped-call]
    with distributed.no_sync_unless(sync, model):
        adversarial_loss: Tensor = criterion(model(adversarial), labels)
        (0.5 * scale * adversarial_loss).backward()  # type: ignore[no-untyped-call]
    return 0.5 * (clean_loss.detach() + adversarial_loss.detach())
