"""The GPU paths (skipped without CUDA; run on a device machine): NCCL chosen by itself, bf16
autocast with fp32 weights, pinned-memory loading, a checkpoint round trip of CUDA state, and a
restart at world 1→1 under torchrun that resumes on the GPU with no lost step."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from crescendo_spec import JobSpec, contract
from crescendo_spec.trace import read_trace, restarts, steps_monotonic
from crescendo_trainer import Job
from crescendo_trainer.environment import read_environment
from crescendo_trainer.exporter import TrainerMetrics
from crescendo_trainer.signals import StopFlag
from torch import nn
from torch.utils.data import TensorDataset

from tests.trainer.conftest import LocalJob, small_job

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (a device machine)"),
]


@pytest.fixture
def gpu_job(tmp_path: Path) -> Iterator[Callable[..., Job]]:
    jobs: list[Job] = []

    def make(run: str = "run", **overrides: Any) -> Job:
        env = read_environment({
            contract.ENV_CHECKPOINT_DIR: str(tmp_path / run / "ckpt"),
            contract.ENV_TRACE_FILE: str(tmp_path / run / "trace.jsonl"),
        })
        spec = small_job(script="train.py", gpusPerReplica=1, maxSteps=6,
                         batch={"initial": 32, "max": 64, "perGpuMax": 16}, **overrides)
        jobs.append(Job(spec, env, TrainerMetrics("t", "default"), StopFlag()))
        return jobs[-1]

    yield make
    for job in jobs:
        job.close()


def data() -> TensorDataset:
    generator = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(256, 32, generator=generator),
                         torch.randint(0, 4, (256,), generator=generator))


def test_a_step_on_the_gpu_runs_bf16_autocast_with_fp32_weights_and_pinned_batches(
    gpu_job: Callable[..., Job],
) -> None:
    job = gpu_job()
    assert job.device.type == "cuda"
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 4))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    job.track(model=model, optimizer=optimizer)
    ddp = job.distribute(model)
    loader = job.loader(data())
    assert loader.options["pin_memory"] is True
    assert job.running
    for x, y in job.micro_batches():
        assert x.is_cuda and y.is_cuda
        with job.autocast():
            logits = ddp(x)
            assert logits.dtype == torch.bfloat16
        job.backward(nn.functional.cross_entropy(logits.float(), y))
    report = job.step(optimizer)
    assert all(p.dtype == torch.float32 and p.is_cuda for p in model.parameters())
    assert report.step == 1 and torch.isfinite(torch.tensor(report.loss))


def test_cuda_state_round_trips_through_a_checkpoint(gpu_job: Callable[..., Job]) -> None:
    def run(job: Job, stop_after: int | None) -> nn.Module:
        model = nn.Linear(32, 4)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        job.track(model=model, optimizer=optimizer)
        ddp = job.distribute(model)
        job.loader(data())
        while job.running:
            for x, y in job.micro_batches():
                job.backward(nn.functional.cross_entropy(ddp(x), y))
            job.step(optimizer)
            if stop_after is not None and job.progress.step == stop_after:
                job.stop.signal_name = "SIGTERM"
        return model

    unbroken = run(gpu_job("unbroken"), None)
    run(gpu_job("broken"), 2)
    resumed = run(gpu_job("broken"), None)
    assert next(resumed.parameters()).is_cuda
    for a, b in zip(resumed.parameters(), unbroken.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_a_restart_at_world_1_resumes_on_the_gpu_with_nccl_and_no_lost_step(
    local_job: Callable[[JobSpec], LocalJob],
) -> None:
    spec = small_job(gpusPerReplica=1, maxSteps=400, replicas={"min": 1, "max": 1})
    job = local_job(spec)
    job.add(0)
    job.wait_for("50 steps", lambda: len(job.steps()) >= 50)
    assert "process group: backend nccl" in job.paths.log(0).read_text()
    job.remove(0)  # SIGTERM: the trainer checkpoints and exits
    job.add(0)
    assert job.agents[0].wait(timeout=240) == 0, job.logs()
    records = read_trace(job.paths.trace)
    assert steps_monotonic(records) and records[-1]["kind"] == "done"
    assert [r.lost_steps for r in restarts(records)] == [0]
