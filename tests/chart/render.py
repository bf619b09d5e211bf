"""Render and lint charts/crescendo with the real helm binary (tests/chart/tools.py)."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from tests.chart.tools import binary

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts/crescendo"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
NAMESPACE = "crescendo-system"
RELEASE = "r"


def helm(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run helm; the caller checks the return code (a failing render is sometimes the point)."""
    return subprocess.run(
        [str(binary("helm")), *map(str, args)], capture_output=True, text=True, check=False
    )


def template_text(
    values: Sequence[Path] = (), sets: Sequence[str] = (), *, crds: bool = False
) -> subprocess.CompletedProcess[str]:
    args: list[str | Path] = ["template", RELEASE, CHART, "--namespace", NAMESPACE]
    args += [a for v in values for a in ("-f", v)]
    args += [a for s in sets for a in ("--set", s)]
    return helm(*args, *(["--include-crds"] if crds else []))


def render(
    values: Sequence[Path] = (), sets: Sequence[str] = (), *, crds: bool = False
) -> list[dict[str, Any]]:
    """The rendered objects (documents that are not empty), or AssertionError with helm's say."""
    result = template_text(values, sets, crds=crds)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def of_kind(objects: Sequence[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: Sequence[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = of_kind(objects, kind)
    assert len(found) == 1, f"{len(found)} {kind} objects"
    return found[0]
