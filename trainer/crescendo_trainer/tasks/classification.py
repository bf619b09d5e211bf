"""The built-in image-classification task: its model, data, micro-step and quality (accuracy).

Owns what a classification job trains on (`spec.model` and `spec.dataset`, datasets.py and
models.py), the micro-step with the spec's adversarial training (FGSM/PGD rows mixed into the
batch, or ConAdv's copies made ahead from stale weights, adversarial/), the Hessian's loss
closure for ABS/ABSA (one seeded batch, the same on every rank) and the test accuracy, each rank
scoring a stripe of the test set. The loop around it is the library's (builtin.py, job.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from crescendo_spec.model import JobSpec
from torch import Tensor, nn
from torch.utils.data import Dataset

from crescendo_trainer import distributed
from crescendo_trainer.adversarial.feed import ConAdvFeed, conadv_backward
from crescendo_trainer.adversarial.training import AdversarialTraining
from crescendo_trainer.datasets import TensorDataset, load_dataset
from crescendo_trainer.hessian import seeded_batch
from crescendo_trainer.job import Job
from crescendo_trainer.models import build_model
from crescendo_trainer.telemetry import ACCURACY, Quality

EVAL_CHUNK = 1024  # test images scored per forward


class Images(Dataset[tuple[Tensor, Tensor]]):
    """Map-style view of an in-memory data set's training split. `__getitems__` gathers a whole
    micro-batch with one index (torch's DataLoader calls it when present and hands its result to
    `collate_fn`, which must then be the identity): one gather instead of B item copies."""

    def __init__(self, data: TensorDataset) -> None:
        self.x, self.y = data.train_x, data.train_y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.x[index], self.y[index]

    def __getitems__(self, indices: Sequence[int]) -> tuple[Tensor, Tensor]:
        index = torch.as_tensor(indices)
        return self.x[index], self.y[index]


def _identity(batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    return batch


class Classification:
    def __init__(self, spec: JobSpec, job: Job) -> None:
        self.spec, self.job = spec, job
        self.data = load_dataset(spec.dataset, cache_dir=job.env.data_cache)
        job.telemetry.phase("data")
        torch.manual_seed(spec.seed)  # the same initial weights on every rank
        self.module = build_model(spec.model, self.data.input_shape, self.data.num_classes)
        self.adversarial = AdversarialTraining(
            spec.adversarial, job.policy, block=spec.batch.initial, seed=spec.seed
        )
        self.criterion = nn.CrossEntropyLoss(reduction="sum")
        self.conadv: ConAdvFeed | None = None
        self._copies: list[Tensor] | None = None
        self.ratio = 0.0  # the adversarial share of this step

    def prepare(self, job: Job) -> None:
        """After the job has the model: data loader, curvature closure, ConAdv's pipeline."""
        job.loader(Images(self.data), collate_fn=_identity)
        absa = self.spec.batch.absa
        x, y = seeded_batch(self.data.train_x, self.data.train_y,
                            absa.hessian_batch * absa.hessian_batches, seed=self.spec.seed)
        job.measure_curvature_with(nn.functional.cross_entropy, x, y)
        job.evaluate_with(self.accuracy)
        if self.spec.adversarial.method == "conadv":
            assert job.sampler is not None  # job.loader made it
            self.conadv = ConAdvFeed(self.spec.adversarial, self.module, job.sampler, self.data,
                                     job.device, seed=self.spec.seed * 7919 + job.rank)

    def begin_step(self) -> None:
        """Per step: the adversarial share (exported) and ConAdv's copies of this step."""
        job, p = self.job, self.job.progress
        self.ratio = self.adversarial.ratio(p.global_batch, p.epoch)
        job.telemetry.adversarial_ratio(self.ratio)
        if self.conadv is not None:
            self._copies = self.conadv.adversarial_chunks(
                p.step, p.epoch, p.position, job.layout, job.rank)

    def micro_step(self, model: nn.Module, batch: tuple[Tensor, Tensor]) -> None:
        job = self.job
        x, y = batch
        if self._copies is not None:
            copy = self._copies[job.micro.index]
            loss = conadv_backward(model, self.criterion, (x, y), copy, job.loss_scale,
                                   job.micro.last)
            job.add_loss(loss)
            return
        x = self.adversarial.apply(self.module, x, y, self.ratio, job.progress.step,
                                   self.data.num_classes)
        with job.autocast():
            loss = nn.functional.cross_entropy(model(x), y)
        job.backward(loss)

    @torch.no_grad()
    def accuracy(self) -> Quality:
        """Test accuracy of the weights the job exports, each rank scoring a stripe."""
        module, job = self.module, self.job
        was_training = module.training
        module.eval()
        xs = self.data.test_x[job.rank :: job.world]
        ys = self.data.test_y[job.rank :: job.world]
        correct = torch.zeros((), dtype=torch.float64)
        for start in range(0, len(ys), EVAL_CHUNK):
            x = xs[start : start + EVAL_CHUNK].to(job.device)
            predicted = module(x).argmax(dim=1).cpu()
            correct += (predicted == ys[start : start + EVAL_CHUNK]).sum()
        module.train(was_training)
        totals = distributed.all_reduce_sum(torch.stack([correct, torch.tensor(float(len(ys)))]))
        return {ACCURACY: float(totals[0] / totals[1])}

    def close(self) -> None:
        if self.conadv is not None:
            self.conadv.close()
