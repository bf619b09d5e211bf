"""NOTES.txt, as `helm install` prints it, tells the user the next commands, and they are right.

helm renders NOTES.txt only on install, and install needs an API server even for a client dry
run (its /version and discovery): the API emulator serves those; `--disable-openapi-validation`
because the emulator has no OpenAPI document (test_chart.py validates the objects instead).
"""

from __future__ import annotations

import asyncio
import re
import subprocess
from pathlib import Path

import kmock
import pytest

from tests.chart.render import CHART, NAMESPACE, RELEASE, ROOT
from tests.chart.tools import binary
from tests.operator.conftest import Cluster


async def _notes(cluster: Cluster, values: list[Path]) -> str:
    command = [str(binary("helm")), "install", RELEASE, str(CHART), "-n", NAMESPACE,
               "--dry-run=client", "--disable-openapi-validation",
               f"--kube-apiserver={cluster.url}", *(a for v in values for a in ("-f", str(v)))]
    result = await asyncio.to_thread(
        subprocess.run, command, capture_output=True, text=True, check=False, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.split("\nNOTES:\n", 1)[1]


@pytest.mark.parametrize(("values", "namespace"), [
    ([], NAMESPACE),
    ([CHART / "ci/watch-namespaces-values.yaml"], "team-a"),
    ([CHART / "ci/watch-all-namespaces-values.yaml"], "default"),
], ids=["default", "named-namespaces", "all-namespaces"])
async def test_notes_give_commands_for_the_watched_namespace(
    cluster: Cluster, values: list[Path], namespace: str
) -> None:
    notes = await _notes(cluster, values)
    assert f"kubectl -n {NAMESPACE} rollout status deployment/{RELEASE}-crescendo" in notes
    assert f"kubectl -n {namespace} apply -f manifests/examples/" in notes
    assert f"kubectl -n {namespace} get abj -w" in notes
    for path in re.findall(r"\b((?:manifests|docs)/[\w./-]+\.(?:yaml|md))", notes):
        assert (ROOT / path).exists(), path  # every file the notes point to is in the repository


async def test_notes_suggest_monitoring_only_when_it_is_off(cluster: Cluster) -> None:
    assert "Monitoring is off" in await _notes(cluster, [])
    # The Prometheus Operator's CRDs, as kube-prometheus-stack installs them.
    cluster.emulator.resources["monitoring.coreos.com/v1/podmonitors"] = kmock.ResourceInfo(
        kind="PodMonitor", namespaced=True, singular="podmonitor",
        verbs={"list", "watch", "get", "create", "patch", "update", "delete"},
    )
    monitored = await _notes(cluster, [CHART / "ci/podmonitor-values.yaml"])
    assert "Monitoring is off" not in monitored
