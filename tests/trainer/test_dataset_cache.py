"""The on-disk cache of parsed built-in data sets (it shortens every rescale pause)."""

from __future__ import annotations

from pathlib import Path

import torch
from crescendo_trainer import datasets


def fresh_process() -> None:
    datasets._load_cached.cache_clear()
    datasets._load_disk_cached.cache_clear()


def test_cached_copy_equals_the_parsed_data_set(tmp_path: Path) -> None:
    fresh_process()
    parsed = datasets.load_dataset("digits")
    first = datasets.load_dataset("digits", cache_dir=tmp_path)
    assert (tmp_path / "digits-v1.pt").exists()
    fresh_process()
    cached = datasets.load_dataset("digits", cache_dir=tmp_path)
    for name in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(cached, name), getattr(parsed, name))
        assert torch.equal(getattr(first, name), getattr(parsed, name))
    assert (cached.num_classes, cached.input_shape) == (parsed.num_classes, parsed.input_shape)


def test_corrupt_cache_file_is_rebuilt_not_trusted(tmp_path: Path) -> None:
    (tmp_path / "digits-v1.pt").write_bytes(b"half a file")
    fresh_process()
    data = datasets.load_dataset("digits", cache_dir=tmp_path)
    assert len(data.train_y) == 1_497
    fresh_process()
    assert len(datasets.load_dataset("digits", cache_dir=tmp_path).train_y) == 1_497


def test_unwritable_cache_directory_only_costs_time(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    fresh_process()
    assert len(datasets.load_dataset("digits", cache_dir=blocker / "sub").train_y) == 1_497
