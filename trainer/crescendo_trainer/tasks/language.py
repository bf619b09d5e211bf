"""The built-in causal language-modelling task: a small GPT on the Python standard library.

Owns what a language-model job trains on: the byte-level token file of the standard library's
sources (text/corpus.py, built once into the data cache and memory-mapped, never loaded whole),
read as windows of `language.seqLen` tokens in the order of the job's sampler, the GPT
(text/gpt.py), its micro-step (next-token cross entropy, bf16 autocast on a GPU) and its quality:
the validation loss and perplexity over the first `language.evalSequences` windows of the held-
out split, each rank scoring a stripe and the sums all-reduced. The batch counts sequences; the
schedule policy counts tokens (sequences × seqLen). The loop around it is the library's.
"""

from __future__ import annotations

import math

import torch
from crescendo_spec.model import JobSpec
from torch import Tensor, nn

from crescendo_trainer import distributed
from crescendo_trainer.job import Job
from crescendo_trainer.telemetry import PERPLEXITY, VAL_LOSS, Quality
from crescendo_trainer.text import build_gpt, identity_collate, lm_loss, lm_loss_sums
from crescendo_trainer.text.corpus import load_python_stdlib


class Language:
    def __init__(self, spec: JobSpec, job: Job) -> None:
        self.spec, self.job = spec, job
        corpus = load_python_stdlib(job.env.data_cache)
        seq_len = spec.language.seq_len
        self.train_windows = corpus.train_windows(seq_len)
        self.val_windows = corpus.val_windows(seq_len)
        job.telemetry.phase("data")
        torch.manual_seed(spec.seed)  # the same initial weights on every rank
        self.module = build_gpt(seq_len)

    def prepare(self, job: Job) -> None:
        job.loader(self.train_windows, collate_fn=identity_collate)
        # The Hessian's fixed batch (ABS): the first windows of the training split.
        absa = self.spec.batch.absa
        count = min(absa.hessian_batch * absa.hessian_batches, len(self.train_windows))
        x, y = self.train_windows.__getitems__(list(range(count)))
        job.measure_curvature_with(_flat_loss, x, y)
        job.evaluate_with(self.validation, every_steps=self.spec.language.eval_every_steps)

    def begin_step(self) -> None:
        self.job.telemetry.adversarial_ratio(0.0)

    def micro_step(self, model: nn.Module, batch: tuple[Tensor, Tensor]) -> None:
        x, y = batch
        with self.job.autocast():
            loss = lm_loss(model(x), y)
        self.job.backward(loss)

    def validation(self) -> Quality:
        job = self.job
        total, tokens = lm_loss_sums(self.module, self.val_windows,
                                     self.spec.language.eval_sequences, job.device,
                                     rank=job.rank, world=job.world)
        sums = distributed.all_reduce_sum(torch.tensor([total, float(tokens)],
                                                       dtype=torch.float64))
        loss = float(sums[0] / sums[1])
        return {VAL_LOSS: loss, PERPLEXITY: math.exp(loss)}

    def close(self) -> None:
        return None


def _flat_loss(logits: Tensor, targets: Tensor) -> Tensor:
    return lm_loss(logits, targets)
