"""Checkpoints: round trip, atomic writes, fallback to the previous one, never a silent step 0."""

from __future__ import annotations

import logging
from pathlib import Path
from unittest import mock

import pytest
import torch
from crescendo_trainer import checkpoint
from crescendo_trainer.progress import Progress


def payload(step: int) -> dict[str, object]:
    return {"progress": {"step": step}, "weights": torch.full((3,), float(step))}


def test_round_trip_keeps_every_field(tmp_path: Path) -> None:
    checkpoint.save(tmp_path, 7, payload(7), keep=3)
    loaded = checkpoint.load_latest(tmp_path)
    assert loaded is not None
    assert loaded.payload["progress"] == {"step": 7}
    assert loaded.payload["version"] == checkpoint.VERSION
    assert torch.equal(loaded.payload["weights"], torch.full((3,), 7.0))


def test_newest_wins_and_only_keep_files_remain(tmp_path: Path) -> None:
    for step in (1, 2, 3, 4):
        checkpoint.save(tmp_path, step, payload(step), keep=2)
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == [
        "ckpt-000000004.pt", "ckpt-000000003.pt"
    ]
    loaded = checkpoint.load_latest(tmp_path)
    assert loaded is not None and loaded.payload["progress"] == {"step": 4}


def test_interrupted_write_leaves_the_previous_checkpoint_loadable(tmp_path: Path) -> None:
    checkpoint.save(tmp_path, 1, payload(1), keep=3)
    with mock.patch("os.fsync", side_effect=OSError("disk gone")), pytest.raises(OSError):
        checkpoint.save(tmp_path, 2, payload(2), keep=3)
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt-000000001.pt"], "temp file left behind"
    loaded = checkpoint.load_latest(tmp_path)
    assert loaded is not None and loaded.payload["progress"] == {"step": 1}


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage"])
def test_corrupt_newest_falls_back_to_the_previous_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    checkpoint.save(tmp_path, 1, payload(1), keep=3)
    newest = checkpoint.save(tmp_path, 2, payload(2), keep=3)
    raw = newest.read_bytes()
    if damage == "truncate":
        newest.write_bytes(raw[: len(raw) // 2])
    elif damage == "flip":
        newest.write_bytes(raw[:-10] + bytes([raw[-10] ^ 0xFF]) + raw[-9:])
    else:
        newest.write_bytes(b"not a checkpoint")
    with caplog.at_level(logging.WARNING):
        loaded = checkpoint.load_latest(tmp_path)
    assert loaded is not None and loaded.payload["progress"] == {"step": 1}
    assert loaded.skipped == (newest,)
    assert "ckpt-000000002.pt is unusable" in caplog.text


def test_all_checkpoints_corrupt_is_an_error_not_a_restart_from_zero(tmp_path: Path) -> None:
    path = checkpoint.save(tmp_path, 5, payload(5), keep=3)
    path.write_bytes(b"\0" * 100)
    with pytest.raises(checkpoint.CheckpointError, match="refusing to restart from step 0"):
        checkpoint.load_latest(tmp_path)


def test_empty_or_missing_directory_means_a_fresh_start(tmp_path: Path) -> None:
    assert checkpoint.load_latest(tmp_path) is None
    assert checkpoint.load_latest(tmp_path / "absent") is None


def test_the_lost_steps_total_round_trips_in_the_progress(tmp_path: Path) -> None:
    progress = Progress(global_batch=64, step=200, samples_seen=12800, lost_steps=37)
    checkpoint.save(tmp_path, 200, {"progress": progress.state_dict()}, keep=2)
    loaded = checkpoint.load_latest(tmp_path)
    assert loaded is not None
    assert Progress.from_state_dict(loaded.payload["progress"]).lost_steps == 37


def test_a_checkpoint_from_before_the_lost_steps_field_loads_with_0(tmp_path: Path) -> None:
    older = {  # Progress.state_dict() as trainers without lost steps wrote it
        "global_batch": 64, "step": 150, "epoch": 1, "position": 1600, "samples_seen": 9600,
        "world_size": 2, "last_step_time": 1.7e9, "accuracy": None,
    }
    checkpoint.save(tmp_path, 150, {"progress": older}, keep=2)
    loaded = checkpoint.load_latest(tmp_path)
    assert loaded is not None
    progress = Progress.from_state_dict(loaded.payload["progress"])
    assert (progress.step, progress.world_size, progress.lost_steps) == (150, 2, 0)
