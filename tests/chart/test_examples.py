"""`kubectl apply --dry-run=client -f` parses every example manifest (the real kubectl 1.31).

kubectl maps a manifest's kind to a resource through the API server's discovery even for a
client-side dry run, so it runs against the API emulator with the CRD's resource registered
(tests/operator/conftest.py). `--validate=false`: the emulator serves no OpenAPI document; the
schema itself is checked in tests/operator/test_crd.py (jsonschema against the CRD).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.chart.render import ROOT
from tests.chart.tools import binary
from tests.operator.conftest import Cluster

EXAMPLES = sorted((ROOT / "manifests/examples").glob("*.yaml"))


async def _dry_run(cluster: Cluster, path: Path) -> subprocess.CompletedProcess[str]:
    command = [str(binary("kubectl")), "apply", "--dry-run=client", "--validate=false",
               f"--server={cluster.url}", "--namespace=default", "-o", "json", "-f", str(path)]
    # Off the event loop: the emulator serves kubectl's requests on this loop meanwhile.
    return await asyncio.to_thread(
        subprocess.run, command, capture_output=True, text=True, check=False, timeout=60)


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
async def test_kubectl_client_dry_run_parses_the_example(cluster: Cluster, path: Path) -> None:
    result = await _dry_run(cluster, path)
    assert result.returncode == 0, result.stderr
    applied = json.loads(result.stdout)
    written = yaml.safe_load(path.read_text())
    assert (applied["kind"], applied["metadata"]["name"]) == (
        "AdaptiveBatchJob", written["metadata"]["name"])
    assert applied["spec"] == written["spec"]


async def test_kubectl_refuses_a_manifest_it_cannot_parse(cluster: Cluster, tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("apiVersion: crescendo.dev/v1alpha1\nkind: AdaptiveBatchJob\nspec: [\n")
    assert (await _dry_run(cluster, broken)).returncode != 0


async def test_kubectl_refuses_a_kind_the_server_does_not_serve(
    cluster: Cluster, tmp_path: Path
) -> None:
    misspelt = tmp_path / "misspelt.yaml"
    text = EXAMPLES[0].read_text().replace("kind: AdaptiveBatchJob", "kind: AdaptiveBatchJobs")
    misspelt.write_text(text)
    result = await _dry_run(cluster, misspelt)
    assert result.returncode != 0 and "AdaptiveBatchJobs" in result.stderr
