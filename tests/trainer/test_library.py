"""The trainer library in one process (no torchrun): the state registry, the elastic loader over a
user's Dataset, the LR rule on a user's optimizer and scheduler, the step's gradient, and restarts
of tracked components."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from crescendo_spec import JobSpec, contract
from crescendo_spec.trace import read_trace
from crescendo_trainer import Job
from crescendo_trainer.batching import layout
from crescendo_trainer.checkpoint import CheckpointError
from crescendo_trainer.environment import read_environment
from crescendo_trainer.exporter import TrainerMetrics
from crescendo_trainer.loader import ElasticLoader
from crescendo_trainer.sampler import ElasticSampler
from crescendo_trainer.signals import StopFlag
from crescendo_trainer.state import StateError, StateRegistry
from torch import nn
from torch.utils.data import Dataset

from tests.trainer.conftest import small_job


class Squares(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """A user's map-style Dataset: sample i is (i, i²), so a batch tells which samples it holds."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.tensor([float(i)]), torch.tensor([float(i * i)])


def indices_of(batch: tuple[torch.Tensor, torch.Tensor]) -> list[int]:
    return [int(v) for v in batch[0].flatten()]


# --- state registry ------------------------------------------------------------------------------


def test_registry_refuses_reserved_duplicate_and_stateless_components() -> None:
    registry = StateRegistry()
    registry.register("model", nn.Linear(2, 2))
    with pytest.raises(StateError, match="'progress' is the job's own"):
        registry.register("progress", nn.Linear(2, 2))
    with pytest.raises(StateError, match="already registered"):
        registry.register("model", nn.Linear(2, 2))
    with pytest.raises(StateError, match="no state_dict"):
        registry.register("extra", object())


def test_registry_restores_nothing_when_a_component_is_missing_or_unknown() -> None:
    a, b = nn.Linear(2, 2), nn.Linear(2, 2)
    saved = StateRegistry()
    saved.register("model", a)
    payload = saved.state_dict()
    restoring = StateRegistry()
    restoring.register("model", b)
    restoring.register("ema", nn.Linear(2, 2))
    before = b.weight.detach().clone()
    with pytest.raises(StateError, match="lacks ema"):
        restoring.load_state_dict(payload)
    assert torch.equal(b.weight, before), "a half-restored job"
    with pytest.raises(StateError, match="no component is registered for stray"):
        saved.load_state_dict({**payload, "stray": {}})


# --- elastic loader ------------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_gives_each_rank_its_micro_batches_and_honours_the_collate(workers: int) -> None:
    sampler = ElasticSampler(100, seed=3)
    plan = layout(24, 2, per_gpu_max=5)  # 12 per rank, 3 micro-batches of 4
    calls: list[int] = []

    def collate(items: list[Any]) -> tuple[torch.Tensor, torch.Tensor]:
        calls.append(len(items))
        return torch.stack([x for x, _ in items]), torch.stack([y for _, y in items])

    for rank in (0, 1):
        loader = ElasticLoader(Squares(100), sampler, rank, collate_fn=collate,
                               num_workers=workers)
        batches = loader.step_batches(0, 24, plan)
        expected = sampler.micro_batches(sampler.permutation(0), 24, plan, rank)
        assert [indices_of(b) for b in batches] == [e.tolist() for e in expected]
        loader.close()
    if workers == 0:
        assert calls == [4, 4, 4, 4, 4, 4]


def test_loader_resumes_at_another_world_size_with_no_sample_skipped_or_repeated() -> None:
    sampler, dataset = ElasticSampler(96, seed=1), Squares(96)
    seen: list[int] = []
    position = 0
    for world, steps in ((1, 2), (3, 1), (2, 3)):  # restarts between the segments
        plan = layout(16, world, per_gpu_max=4)
        loaders = [ElasticLoader(dataset, sampler, r) for r in range(world)]
        for _ in range(steps):
            for loader in loaders:
                for batch in loader.step_batches(0, position, plan):
                    seen.extend(indices_of(batch))
            position += 16
    assert sorted(seen) == sorted(sampler.permutation(0)[:96].tolist())


def test_loader_refuses_the_arguments_the_job_owns() -> None:
    with pytest.raises(TypeError, match="'batch_size' is the job's"):
        ElasticLoader(Squares(10), ElasticSampler(10, 0), 0, batch_size=4)


# --- the job in one process ----------------------------------------------------------------------


@pytest.fixture
def make_job(tmp_path: Path) -> Iterator[Any]:
    jobs: list[Job] = []

    def make(spec: JobSpec, run: str = "run") -> Job:
        env = read_environment({
            contract.ENV_CHECKPOINT_DIR: str(tmp_path / run / "ckpt"),
            contract.ENV_TRACE_FILE: str(tmp_path / run / "trace.jsonl"),
        })
        jobs.append(Job(spec, env, TrainerMetrics("t", "default"), StopFlag()))
        return jobs[-1]

    yield make
    for job in jobs:
        job.close()


def regression_job(**overrides: Any) -> JobSpec:
    return small_job(script="train.py", maxSteps=12, checkpoint={"everySteps": 5},
                     batch={"initial": 8, "max": 32, "perGpuMax": 3, "policy": "fixed"},
                     learningRate={"base": 0.1, "scaling": "linear", "referenceBatch": 4},
                     **overrides)


def train(job: Job, model: nn.Linear, optimizer: torch.optim.Optimizer,
          scheduler: torch.optim.lr_scheduler.LRScheduler, stop_after: int | None = None) -> None:
    job.track(model=model, optimizer=optimizer, scheduler=scheduler)
    ddp = job.distribute(model)
    job.loader(Squares(40))
    while job.running:
        for x, y in job.micro_batches():
            job.backward(((ddp(x / 40) - y / 1600) ** 2).mean())
        job.step(optimizer)
        scheduler.step()
        if stop_after is not None and job.progress.step == stop_after:
            job.stop.signal_name = "SIGTERM"  # as the signal handler would


def parts(lr: float = 0.5) -> tuple[nn.Linear, torch.optim.SGD, torch.optim.lr_scheduler.StepLR]:
    torch.manual_seed(0)
    model = nn.Linear(1, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    return model, optimizer, torch.optim.lr_scheduler.StepLR(optimizer, step_size=4, gamma=0.5)


def test_step_gradient_is_the_mean_over_the_global_batch_through_accumulation(
    make_job: Any,
) -> None:
    job = make_job(regression_job())
    model, optimizer, _ = parts()
    job.track(model=model, optimizer=optimizer)
    job.distribute(model)
    job.loader(Squares(40))
    assert job.running and job.layout.accumulation == 3  # 8 samples, micro-batches ≤ 3
    indices: list[int] = []
    for x, y in job.micro_batches():
        indices.extend(int(v) for v in x.flatten())
        job.backward(((model(x / 40) - y / 1600) ** 2).mean())
    twin = nn.Linear(1, 1)
    twin.load_state_dict(model.state_dict())
    xs = torch.tensor(indices, dtype=torch.float32).unsqueeze(1)
    ((twin(xs / 40) - xs**2 / 1600) ** 2).mean().backward()
    assert len(indices) == 8
    assert model.weight.grad is not None and twin.weight.grad is not None
    torch.testing.assert_close(model.weight.grad, twin.weight.grad)


def test_lr_rule_multiplies_the_users_lr_only_for_the_step_and_the_scheduler_keeps_its_own(
    make_job: Any,
) -> None:
    job = make_job(regression_job())
    model, optimizer, scheduler = parts(lr=0.5)
    train(job, model, optimizer, scheduler)
    steps = [r for r in read_trace(job.env.trace_file) if r["kind"] == "step"]
    # linear scaling: B/referenceBatch = 8/4 = 2, times StepLR's 0.5 every 4 steps
    assert [r["lr"] for r in steps] == [pytest.approx(0.5 * 2 * 0.5 ** ((s - 1) // 4))
                                       for s in range(1, 13)]
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.5 * 0.5**3)
    assert scheduler.get_last_lr() == [pytest.approx(0.5 * 0.5**3)]


def test_a_stopped_job_resumes_its_tracked_components_and_ends_where_an_unbroken_one_does(
    make_job: Any,
) -> None:
    unbroken = make_job(regression_job(), run="unbroken")
    model, optimizer, scheduler = parts()
    train(unbroken, model, optimizer, scheduler)

    first = make_job(regression_job(), run="broken")
    m1, o1, s1 = parts()
    train(first, m1, o1, s1, stop_after=7)
    assert first.outcome is not None and first.outcome.value == "stopped"
    second = make_job(regression_job(), run="broken")
    m2, o2, s2 = parts()
    train(second, m2, o2, s2)
    assert second.progress.step == 12
    torch.testing.assert_close(m2.weight, model.weight)
    assert s2.last_epoch == scheduler.last_epoch == 12
    records = read_trace(second.env.trace_file)
    # The flag raised after step 7 is agreed in step 8's all-reduce: step 8 is the last.
    assert [r["step"] for r in records if r["kind"] == "resume"] == [8]


def test_a_checkpoint_of_other_components_is_refused_not_half_loaded(make_job: Any) -> None:
    first = make_job(regression_job(), run="r")
    model, optimizer, scheduler = parts()
    train(first, model, optimizer, scheduler, stop_after=3)
    second = make_job(regression_job(), run="r")
    m2 = nn.Linear(1, 1)
    second.track(model=m2)  # no optimizer, no scheduler: not the job that saved
    second.distribute(m2)
    second.loader(Squares(40))
    unclaimed = "no component is registered for optimizer, scheduler"
    with pytest.raises(CheckpointError, match=unclaimed):
        _ = second.running
