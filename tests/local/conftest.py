"""Fixtures for `crescendo local` end-to-end runs: job files and process accounting."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import yaml


def write_job(path: Path, **spec_overrides: Any) -> Path:
    """A growing mnist5k job: AdaBatch 32 → 64 after 2 epochs, so replicas go 1 → 2."""
    spec: dict[str, Any] = {
        "gpusPerReplica": 0,
        "replicas": {"min": 1, "max": 2},
        "batch": {"initial": 32, "perGpuMax": 32, "max": 64, "policy": "adabatch",
                  "adabatch": {"resizeEveryEpochs": 2}},
        "learningRate": {"base": 0.05},
        "model": "cnn",
        "dataset": "mnist5k",
        "epochs": 14,
        "logEverySteps": 100,
        "checkpoint": {"everySteps": 100},
        "scaling": {"cooldownSeconds": 0, "maxStalenessSeconds": 30},
        "rendezvous": {"joinTimeoutSeconds": 60},
    }
    spec.update(spec_overrides)
    path.write_text(yaml.safe_dump({
        "apiVersion": "crescendo.dev/v1alpha1", "kind": "AdaptiveBatchJob",
        "metadata": {"name": "tiny"}, "spec": spec,
    }))
    return path


def crescendo(*args: str) -> list[str]:
    return [sys.executable, "-m", "crescendo_operator.cli", *args]


def leftovers(run_dir: Path) -> list[psutil.Process]:
    """Processes still running for this run (agents or trainers write into its directory)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "environ"]):
        try:
            environ = proc.info["environ"] or {}
        except (psutil.AccessDenied, psutil.NoSuchProcess):
            continue
        if str(run_dir) in environ.get("CRESCENDO_TRACE_FILE", ""):
            found.append(proc)
    return found


def run_local(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(crescendo("local", *args), capture_output=True, text=True,
                          timeout=timeout)
