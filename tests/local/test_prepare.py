"""`crescendo local`'s preparation: what a new run clears and what a resumed run keeps."""

from __future__ import annotations

from pathlib import Path

import pytest
from crescendo_operator.local.agents import LocalPaths
from crescendo_operator.local.runner import LocalError, LocalOptions, prepare

ROOT = Path(__file__).resolve().parents[2]
JOB = ROOT / "manifests/examples/digits-adabatch.yaml"


def test_a_new_run_clears_what_a_run_that_never_checkpointed_left(tmp_path: Path) -> None:
    paths = LocalPaths(tmp_path)
    paths.checkpoints.mkdir(parents=True)
    leftovers = [paths.checkpoints / "high-water", paths.checkpoints / ".ckpt-tmp", paths.trace]
    for leftover in leftovers:
        leftover.write_text("from a run that died before its first checkpoint")
    prepare(LocalOptions(JOB, run_dir=tmp_path))
    assert [p for p in leftovers if p.exists()] == []


def test_a_run_dir_with_checkpoints_needs_resume_and_keeps_everything(tmp_path: Path) -> None:
    paths = LocalPaths(tmp_path)
    paths.checkpoints.mkdir(parents=True)
    kept = [paths.checkpoints / "ckpt-00000050.pt", paths.checkpoints / "high-water"]
    for path in kept:
        path.write_bytes(b"x")
    with pytest.raises(LocalError, match="--resume"):
        prepare(LocalOptions(JOB, run_dir=tmp_path))
    prepare(LocalOptions(JOB, run_dir=tmp_path, resume=True))
    assert all(p.exists() for p in kept)
