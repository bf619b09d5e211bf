"""`python -m crescendo_trainer`: bad input is refused with the field named, nothing trained."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from crescendo_trainer import checkpoint, high_water
from crescendo_trainer.high_water import Mark
from crescendo_trainer.progress import Progress
from torch import Tensor


def run_trainer(tmp_path: Path, spec: dict[str, object]) -> subprocess.CompletedProcess[str]:
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({
        "apiVersion": "crescendo.dev/v1alpha1", "kind": "AdaptiveBatchJob",
        "metadata": {"name": "bad"}, "spec": spec,
    }))
    return subprocess.run(
        [sys.executable, "-m", "crescendo_trainer", "--config", str(job)],
        capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin", "CRESCENDO_METRICS_PORT": "0", "OMP_NUM_THREADS": "1"},
    )


BASE: dict[str, object] = {"dataset": "digits", "maxSteps": 3}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"batch": {"policy": "magic"}}, "spec.batch.policy: Input should be 'fixed', 'adabatch'"),
        ({"batch": {"initial": 0}}, "spec.batch.initial: Input should be greater than or equal"),
        ({"batch": {"initial": 512, "max": 256}}, "spec.batch: initial (512) must be <= max (256)"),
        ({"replicas": {"min": 3, "max": 2}}, "spec.replicas: min (3) must be <= max (2)"),
        ({"dataset": "cifar"}, "spec.dataset: must be one of digits, mnist5k, fashion-mnist"),
        ({"dataset": "no_such_module:load"}, "spec.dataset='no_such_module:load'"),
    ],
)
def test_invalid_job_exits_2_naming_the_field(
    tmp_path: Path, change: dict[str, object], message: str
) -> None:
    result = run_trainer(tmp_path, {**BASE, **change, "checkpoint": {"dir": str(tmp_path / "c")}})
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert not (tmp_path / "c").exists(), "an invalid job wrote a checkpoint"


def test_corrupt_only_checkpoint_stops_the_trainer_instead_of_restarting_at_step_0(
    tmp_path: Path,
) -> None:
    ckpt = tmp_path / "c"
    checkpoint.save(ckpt, 2, {"progress": {}}, keep=2).write_bytes(b"garbage")
    result = run_trainer(tmp_path, {**BASE, "checkpoint": {"dir": str(ckpt)}})
    assert result.returncode == 1
    assert "refusing to restart from step 0" in result.stderr
    assert [p.name for p in checkpoint.list_checkpoints(ckpt)] == ["ckpt-000000002.pt"]


def test_a_finished_job_resumes_from_its_checkpoint_and_stays_finished(tmp_path: Path) -> None:
    spec = {**BASE, "checkpoint": {"dir": str(tmp_path / "c")}}
    first = run_trainer(tmp_path, spec)
    assert first.returncode == 0, first.stderr
    second = run_trainer(tmp_path, spec)
    assert second.returncode == 0, second.stderr
    assert "resumed from ckpt-000000003.pt: step 3" in second.stderr
    assert "0 steps lost (redone), 0 in all" in second.stderr, "a clean finish lost steps"
    assert "trainer done at step 3" in second.stderr


def test_steps_beyond_the_checkpoint_are_counted_lost_once_and_carried_in_checkpoints(
    tmp_path: Path,
) -> None:
    ckpt = tmp_path / "c"
    first = run_trainer(tmp_path, {**BASE, "checkpoint": {"dir": str(ckpt)}})
    assert first.returncode == 0, first.stderr
    assert high_water.read(ckpt) == Mark(3, 0)
    # As if that run had gone on to step 5 (having counted 2 lost steps before) and been killed.
    high_water.record_path(ckpt).write_bytes(high_water.encode(5, 2))
    # A start that does no step (budget already reached) still marks its count as counted...
    second = run_trainer(tmp_path, {**BASE, "checkpoint": {"dir": str(ckpt)}})
    assert second.returncode == 0, second.stderr
    assert "resumed from ckpt-000000003.pt: step 3" in second.stderr
    assert "2 steps lost (redone), 4 in all" in second.stderr
    assert high_water.read(ckpt) == Mark(3, 4)
    # ...so the next start, from the same step, counts nothing twice and carries the total on.
    third = run_trainer(tmp_path, {**BASE, "maxSteps": 6, "checkpoint": {"dir": str(ckpt)}})
    assert third.returncode == 0, third.stderr
    assert "0 steps lost (redone), 4 in all" in third.stderr
    saved = checkpoint.read(checkpoint.checkpoint_path(ckpt, 6))
    assert Progress.from_state_dict(saved["progress"]).lost_steps == 4
    assert high_water.read(ckpt) == Mark(6, 4)


def trained_weights(tmp_path: Path, name: str, adversarial: dict[str, object]) -> list[Tensor]:
    ckpt = tmp_path / name
    # mlp: no BatchNorm, whose running statistics the second (adversarial) forward would move.
    spec = {**BASE, "model": "mlp", "maxSteps": 6, "checkpoint": {"dir": str(ckpt)},
            "adversarial": adversarial}
    done = run_trainer(tmp_path, spec)
    assert done.returncode == 0, done.stderr
    return list(checkpoint.read(checkpoint.checkpoint_path(ckpt, 6))["model"].values())


def test_conadv_trains_on_its_copies_weighted_half_each(tmp_path: Path) -> None:
    plain = trained_weights(tmp_path, "none", {"method": "none"})
    # ε = 0: every copy equals its clean batch, so ½·L(x) + ½·L(copy) is plain training's loss.
    unperturbed = trained_weights(tmp_path, "eps0", {"method": "conadv", "epsilon": 0.0})
    perturbed = trained_weights(tmp_path, "eps", {"method": "conadv", "epsilon": 0.1})
    assert all(torch.allclose(a, b, rtol=0, atol=1e-6)
               for a, b in zip(plain, unperturbed, strict=True))
    assert any(not torch.allclose(a, b, atol=1e-4) for a, b in zip(plain, perturbed, strict=True))
