"""What a job needs to run on a cluster, beyond the spec model's own checks (pure).

The model (crescendo_spec) validates a spec for every backend; `crescendo local` runs all
replicas on one machine with one checkpoint directory. On a cluster each replica is a pod with
its own filesystem, and every trainer process resumes from the checkpoint directory: replicas that
may be more than one must share it, or a rescale would resume the new pods from nothing (the
trainer refuses a silent restart at step 0, so the job would fail instead of training).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from crescendo_spec.model import JobSpec
from crescendo_spec.parse import SpecError, parse_spec

from crescendo_operator.builders import template_mounts_checkpoint_dir


def cluster_problems(spec: JobSpec) -> list[str]:
    """One 'spec.path: what is needed' line per thing a cluster run lacks (empty: runnable)."""
    problems: list[str] = []
    shared = spec.checkpoint.volume is not None or template_mounts_checkpoint_dir(spec)
    if spec.replicas.max > 1 and not shared:
        problems.append(
            "spec.checkpoint.volume: required when replicas.max > 1: all replicas resume from "
            f"{spec.checkpoint.dir}, so it must be a shared volume, e.g. "
            "{persistentVolumeClaim: {claimName: crescendo-checkpoints}} on a ReadWriteMany "
            "claim (or mount one there through spec.template.volumeMounts)"
        )
    return problems


def parse_for_cluster(raw: Mapping[str, Any]) -> JobSpec:
    """parse_spec, then the cluster's needs; SpecError lists every problem either found."""
    spec = parse_spec(raw)
    problems = cluster_problems(spec)
    if problems:
        raise SpecError(problems)
    return spec
