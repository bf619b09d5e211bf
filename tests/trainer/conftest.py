"""Fixtures for the trainer tests: small jobs and real local torchrun agents."""

from __future__ import annotations

import itertools
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from crescendo_operator.local.agents import (
    LocalPaths,
    free_port,
    kill_tree,
    start_agent,
    stop_agent,
)
from crescendo_spec import JobSpec, parse_spec
from crescendo_spec.trace import read_trace, restarts, steps_monotonic


def small_job(**overrides: Any) -> JobSpec:
    """An mnist5k/cnn job with fast rendezvous settings and a free rendezvous port."""
    spec: dict[str, Any] = {
        "gpusPerReplica": 0,
        "dataset": "mnist5k",
        "model": "cnn",
        "maxSteps": 400,
        "replicas": {"min": 1, "max": 3},
        "batch": {"initial": 64, "max": 256, "perGpuMax": 32, "policy": "fixed"},
        "learningRate": {"base": 0.05},
        "checkpoint": {"everySteps": 1000},
        "logEverySteps": 25,
        "rendezvous": {"port": free_port(), "maxRestarts": 20},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(spec.get(key), dict):
            spec[key] = {**spec[key], **value}
        else:
            spec[key] = value
    return parse_spec(spec)


class LocalJob:
    """Real torchrun agents of one job, started and stopped by the test."""

    def __init__(self, spec: JobSpec, run_dir: Path, name: str = "t") -> None:
        self.spec, self.paths, self.name = spec, LocalPaths(run_dir), name
        self.agents: dict[int, subprocess.Popen[bytes]] = {}
        self.ports: dict[int, int] = {}

    def add(self, index: int) -> None:
        self.ports[index] = free_port()
        self.agents[index] = start_agent(
            self.name, "default", index, self.spec, self.paths, self.ports[index]
        )

    def remove(self, index: int) -> int:
        return stop_agent(self.agents[index])

    def trace(self) -> list[dict[str, Any]]:
        return read_trace(self.paths.trace)

    def steps(self, **match: Any) -> list[dict[str, Any]]:
        return [
            r for r in self.trace()
            if r["kind"] == "step" and all(r.get(k) == v for k, v in match.items())
        ]

    def wait_for(self, what: str, condition: Callable[[], bool], timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}\n{self.logs()}")
            if all(a.poll() is not None for a in self.agents.values()):
                raise AssertionError(f"all agents exited while waiting for {what}\n{self.logs()}")
            time.sleep(0.2)

    def scrape(self, index: int) -> str:
        url = f"http://127.0.0.1:{self.ports[index]}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode())

    def logs(self) -> str:
        return "\n".join(
            f"--- replica {i}\n" + self.paths.log(i).read_text()[-3000:] for i in self.agents
        )

    def close(self) -> None:
        for agent in self.agents.values():
            stop_agent(agent, grace_seconds=10)


def join_then_leave_costs_no_step(job: LocalJob, steps: int) -> list[dict[str, Any]]:
    """Agent 1 joins a running job and is then SIGTERM'd (a scale-up, then a scale-down): two
    rescales, each at a step boundary with no step lost; the job finishes its `steps`. Returns
    the trace."""
    job.add(0)
    job.wait_for("20 steps at world 1", lambda: len(job.steps(world=1)) >= 20)
    job.add(1)
    job.wait_for("20 steps at world 2", lambda: len(job.steps(world=2)) >= 20)
    assert job.remove(1) is not None

    def back_at_world_1() -> bool:  # one read of the trace per poll: it grows to 10k+ records
        done = job.steps()
        last_at_2 = max(r["step"] for r in done if r["world"] == 2)
        return any(r["world"] == 1 and r["step"] > last_at_2 for r in done)

    job.wait_for("steps at world 1 again", back_at_world_1)
    assert job.agents[0].wait(timeout=180) == 0, job.logs()

    records = job.trace()
    assert records[-1]["kind"] == "done" and records[-1]["step"] == steps
    assert steps_monotonic(records)
    rescales = [r for r in restarts(records) if r.rescale]
    assert [(r.old_world, r.world) for r in rescales] == [(1, 2), (2, 1)]
    assert [r.lost_steps for r in rescales] == [0, 0]
    assert all(r.pause_seconds is not None and r.pause_seconds < 60 for r in rescales)
    return records


def killed_agent_costs_no_step(job: LocalJob) -> None:
    """Agent 1 SIGKILLed at world 2 (no SIGTERM, no grace: the pod vanished): the survivor saves
    the last completed step, restarts at world 1 and finishes with no step lost."""
    job.add(0)  # first, so it hosts the c10d store: with c10d, losing the host ends the job
    job.wait_for("a step at world 1", lambda: len(job.steps(world=1)) >= 1)
    job.add(1)
    job.wait_for("15 steps at world 2", lambda: len(job.steps(world=2)) >= 15)
    kill_tree(job.agents[1])
    assert job.agents[0].wait(timeout=180) == 0, job.logs()

    records = job.trace()
    assert any(r["kind"] == "checkpoint" and r["why"] == "peer lost" for r in records)
    after_kill = [r for r in restarts(records) if (r.old_world, r.world) == (2, 1)]
    assert len(after_kill) == 1 and after_kill[0].lost_steps == 0
    assert steps_monotonic(records) and records[-1]["kind"] == "done"


_module_numbers = itertools.count()


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], str]:
    """Write a module on sys.path (a user's `module:function`); return its name, unique so that
    no earlier import or cache entry is reused."""
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(source: str) -> str:
        name = f"crescendo_user_module_{next(_module_numbers)}"
        (tmp_path / f"{name}.py").write_text(source)
        return name

    return write


@pytest.fixture
def local_job(tmp_path: Path) -> Iterator[Callable[[JobSpec], LocalJob]]:
    jobs: list[LocalJob] = []

    def make(spec: JobSpec) -> LocalJob:
        jobs.append(LocalJob(spec, tmp_path / f"run{len(jobs)}"))
        return jobs[-1]

    yield make
    for job in jobs:
        job.close()


@pytest.fixture
def etcd_endpoint(tmp_path: Path) -> Iterator[str]:
    """A real etcd (Debian's etcd-server) with the v2 API torchrun's etcd-v2 backend needs."""
    import shutil

    if shutil.which("etcd") is None:
        pytest.skip("etcd (Debian package etcd-server) is not installed")
    client, peer = free_port(), free_port()
    process = subprocess.Popen(
        ["etcd", "--enable-v2=true", "--data-dir", str(tmp_path / "etcd"),
         "--listen-client-urls", f"http://127.0.0.1:{client}",
         "--advertise-client-urls", f"http://127.0.0.1:{client}",
         "--listen-peer-urls", f"http://127.0.0.1:{peer}",
         "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
         "--initial-cluster", f"default=http://127.0.0.1:{peer}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{client}/version", timeout=1):
                break
        except OSError:
            if time.monotonic() > deadline:
                process.kill()
                pytest.fail("etcd did not start within 20 s")
            time.sleep(0.2)
    yield f"127.0.0.1:{client}"
    process.kill()
    process.wait()
