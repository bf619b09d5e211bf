"""The elastic data loader: this rank's micro-batches of each step, from any map-style Dataset.

A `torch.utils.data.DataLoader` does the loading (worker processes, `pin_memory`, `collate_fn`,
prefetching, a dataset's batched `__getitems__`); Crescendo only chooses the indices. Its batch
sampler walks the steps from where training stands — (epoch, position) of the job's progress —
and yields, per step, this rank's micro-batches as the layout (batching.py) cuts the step's slice
of the epoch's permutation (sampler.py). The position is a global sample index, so a restart at
any world size continues with exactly the samples not yet seen.

Worker processes ignore SIGTERM and SIGINT: torchrun signals the worker's whole process group on
a rescale, and a loader worker that died of it would crash the step the trainer is finishing
before its checkpoint. They still end with their parent (the DataLoader's watchdog, or the
iterator's close).

The DataLoader iterator is kept while the global batch and the world size stay the same, so its
workers prefetch across steps and epochs; a change of B (or the first step) starts a new one at
the current position, and whatever the old one had prefetched is dropped, never trained on.
"""

from __future__ import annotations

import functools
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from crescendo_trainer.batching import Layout
from crescendo_trainer.sampler import ElasticSampler


@dataclass(frozen=True)
class _Walk:
    """Where an iterator was started: it is valid while the step it expects comes next."""

    layout: Layout
    rank: int


class _StepBatches:
    """Batch sampler: this rank's micro-batch index lists, step after step, from (epoch, position).

    Iterated in the main process (the DataLoader sends each list to a worker), lazily, so an
    iterator that is dropped after a change of B has computed only what it prefetched.
    """

    def __init__(self, sampler: ElasticSampler, walk: _Walk, epoch: int, position: int) -> None:
        self.sampler, self.walk, self.epoch, self.position = sampler, walk, epoch, position

    def __iter__(self) -> Iterator[list[int]]:
        epoch, position, plan = self.epoch, self.position, self.walk.layout
        while True:
            if not self.sampler.has_room(position, plan.global_batch):
                epoch, position = epoch + 1, 0
            permutation = self.sampler.permutation(epoch)
            for chunk in self.sampler.micro_batches(permutation, position, plan, self.walk.rank):
                yield chunk.tolist()
            position += plan.global_batch


class ElasticLoader:
    """Loads `dataset` for the job: `DataLoader` arguments as usual, except the sampling."""

    def __init__(
        self,
        dataset: Dataset[Any],
        sampler: ElasticSampler,
        rank: int,
        *,
        collate_fn: Callable[[Any], Any] | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        **loader_kwargs: Any,
    ) -> None:
        for owned in ("batch_size", "shuffle", "sampler", "batch_sampler", "drop_last"):
            if owned in loader_kwargs:
                raise TypeError(
                    f"ElasticLoader: {owned!r} is the job's (the global batch, the sampler and "
                    "the epoch's tail belong to the batch-size policy and the elastic sampler)"
                )
        self.dataset, self.sampler, self.rank = dataset, sampler, rank
        user_init = loader_kwargs.pop("worker_init_fn", None)
        self.options: dict[str, Any] = {
            "collate_fn": collate_fn, "num_workers": num_workers, "pin_memory": pin_memory,
            "worker_init_fn": functools.partial(_worker_init, user_init), **loader_kwargs,
        }
        self._walk: _Walk | None = None
        self._batches: Iterator[Any] | None = None
        self._expected: tuple[int, int] | None = None  # (epoch, position) the iterator is at

    def __len__(self) -> int:
        return self.sampler.dataset_size

    def step_batches(self, epoch: int, position: int, plan: Layout) -> list[Any]:
        """This rank's collated micro-batches of the step at (epoch, position), in order."""
        walk = _Walk(plan, self.rank)
        if walk != self._walk or self._expected != (epoch, position) or self._batches is None:
            self.close()
            sampler = _StepBatches(self.sampler, walk, epoch, position)
            loader: DataLoader[Any] = DataLoader(self.dataset, batch_sampler=sampler,
                                                 **self.options)
            self._walk, self._batches = walk, iter(loader)
        batches = [next(self._batches) for _ in range(plan.accumulation)]
        after = position + plan.global_batch
        # The iterator rolls into the next epoch where the job does: no room for a full step.
        fits = self.sampler.has_room(after, plan.global_batch)
        self._expected = (epoch, after) if fits else (epoch + 1, 0)
        return batches

    def close(self) -> None:
        """Drop the iterator (its worker processes end with it)."""
        self._batches, self._walk, self._expected = None, None, None


def _worker_init(user_init: Callable[[int], None] | None, worker_id: int) -> None:
    """In each loader worker: leave the stop signals to the trainer (see the module docstring)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if user_init is not None:
        user_init(worker_id)


def to_device(batch: Any, device: torch.device) -> Any:
    """`batch` (a tensor, or tuples/lists/dicts of them) on `device`; non-blocking from pinned
    memory, so the copy overlaps the previous micro-batch's compute on a GPU."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, tuple | list):
        return type(batch)(to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch
