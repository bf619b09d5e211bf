"""A local agent runs the job's entry point as a pod would, with a relative script made local."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from crescendo_operator.builders import torchrun_command
from crescendo_operator.local.agents import LOCAL_HOST, LocalPaths, local_command, local_env
from crescendo_operator.local.runner import LocalError, LocalOptions, prepare
from crescendo_spec import contract, parse_spec
from crescendo_spec.model import JobSpec

from tests.local.conftest import write_job

SPEC = parse_spec({"gpusPerReplica": 0, "epochs": 1})


def test_a_relative_script_runs_from_the_directory_crescendo_local_started_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    spec = SPEC.model_copy(update={"script": "jobs/train.py", "args": ["--x"]})
    line = local_command("j", spec, "local")
    pod_line = torchrun_command("j", spec, LOCAL_HOST, namespace="local")
    assert line[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert line[3:] == [*pod_line[1:-2], str(tmp_path / "jobs/train.py"), "--x"]


def test_an_absolute_script_and_a_module_run_as_the_pod_would() -> None:
    for update in ({"script": "/opt/train.py"}, {"module": "mypkg.train"}):
        spec = SPEC.model_copy(update=update)
        pod_line = torchrun_command("j", spec, LOCAL_HOST, namespace="local")
        assert local_command("j", spec, "local")[3:] == pod_line[1:]


def test_the_trainers_read_the_users_script_path_not_the_local_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    spec = SPEC.model_copy(update={"script": "train.py"})
    env = local_env("j", "local", 0, spec, LocalPaths(tmp_path / "run"), 9400)
    assert JobSpec.model_validate_json(env[contract.ENV_SPEC_JSON]).script == "train.py"


def test_a_missing_script_is_refused_before_anything_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    job = write_job(tmp_path / "job.yaml", script="train.py")
    options = LocalOptions(job, run_dir=tmp_path / "run")
    with pytest.raises(LocalError, match=r"script 'train\.py' is not a file"):
        prepare(options)
    (tmp_path / "train.py").write_text("print('training')\n")
    _, spec, _ = prepare(options)
    assert spec.script == "train.py"
