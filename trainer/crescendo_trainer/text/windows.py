"""Next-token training windows over one split of a byte-level token file, memory-mapped lazily.

This module owns how a split becomes samples: item i is the window of `seq_len + 1` tokens
starting at `start + i * seq_len` (aligned and non-overlapping; consecutive windows share one
token, the last target of one being the first input of the next), returned as `(x, y)` int64
tensors of length `seq_len` with y = x shifted by one. The last window ends at or before `stop`,
so a split's windows never read a token of the other split.

The file is opened with `numpy.memmap(mode="r")` on first access in each process and never
pickled: a DataLoader worker started by spawn or forkserver receives the path and the offsets
and maps the file itself, and only the pages of the windows read are faulted in from the page
cache; the tokens are never copied into the process's own memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch.utils.data import Dataset

from crescendo_trainer.datasets import DatasetError

_T = TypeVar("_T")
_SEQ_LEN_FIELD = "spec.language.seqLen"


def identity_collate(batch: _T) -> _T:
    """The DataLoader `collate_fn` for `TokenWindows`: its `__getitems__` already collates."""
    return batch


class TokenWindows(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """The aligned `seq_len + 1`-token windows of the tokens [start, stop) of a uint8 file.

    Use it in a DataLoader with `collate_fn=identity_collate` (and a batch size or batch
    sampler): torch 2.13's `_MapDatasetFetcher.fetch` (torch/utils/data/_utils/fetch.py), when
    it collates automatically, calls `dataset.__getitems__(indices)` if the dataset has one and
    then passes whatever it returned to `collate_fn`, exactly as it would pass the list of
    `dataset[i]`. Ours returns the finished `(x, y)` batch from one gather, so the default
    collate would stack x and y into one 2×N×T tensor. Wrappers that forward `__getitems__`
    (Subset, StackDataset) expect a list of samples from it; wrap `TokenWindows` in them only
    with `__getitem__`-based loading in mind.
    """

    def __init__(self, path: Path, start: int, stop: int, seq_len: int) -> None:
        size = path.stat().st_size
        if not 0 <= start < stop <= size:
            raise DatasetError(f"token split [{start}, {stop}) is outside {path} ({size} tokens)")
        if seq_len < 1 or (stop - start - 1) // seq_len < 1:
            raise DatasetError(
                f"{_SEQ_LEN_FIELD}={seq_len}: the split of {stop - start} tokens in {path} "
                "holds no window of seqLen + 1 tokens; use a seqLen from 1 to "
                f"{stop - start - 1}"
            )
        self.path, self.start, self.stop, self.seq_len = path, start, stop, seq_len
        self._tokens: np.memmap[Any, np.dtype[np.uint8]] | None = None

    def __len__(self) -> int:
        # Window i needs tokens up to start + (i + 1) * seq_len inclusive, so the last full
        # window must end by stop - 1.
        return (self.stop - self.start - 1) // self.seq_len

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(f"window {index} is outside 0..{len(self) - 1}")
        begin = self.start + index * self.seq_len
        window = np.asarray(self._mapped()[begin : begin + self.seq_len + 1], dtype=np.int64)
        tokens = torch.from_numpy(window)
        return tokens[:-1], tokens[1:]

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The windows `indices` stacked, (N×seq_len, N×seq_len), read with one gather."""
        rows = np.asarray(indices, dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"windows {indices} reach outside 0..{len(self) - 1}")
        # One fancy index of the memmap: N×(seq_len + 1) offsets, one copy out of the page
        # cache, instead of N slices and a stack.
        offsets = (self.start + rows * self.seq_len)[:, None] + np.arange(self.seq_len + 1)
        windows = torch.from_numpy(np.asarray(self._mapped()[offsets], dtype=np.int64))
        # contiguous(): callers may .view() them; the copies cost N×seq_len×16 bytes.
        return windows[:, :-1].contiguous(), windows[:, 1:].contiguous()

    def _mapped(self) -> np.memmap[Any, np.dtype[np.uint8]]:
        if self._tokens is None:
            self._tokens = np.memmap(self.path, dtype=np.uint8, mode="r")
        return self._tokens

    def __getstate__(self) -> dict[str, Any]:
        # The map is per process: a pickled memmap would be copied out as a whole array.
        return {"path": self.path, "start": self.start, "stop": self.stop, "seq_len": self.seq_len}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path, self.start = state["path"], state["start"]
        self.stop, self.seq_len = state["stop"], state["seq_len"]
        self._tokens = None
