"""The only reader of environment variables in the trainer.

torchrun sets the rank variables; the operator (or `crescendo local`) sets the CRESCENDO_*
variables of the contract (crescendo_spec.contract). Everything is read once into a frozen
`Environment`; the rest of the trainer takes that object, never `os.environ`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from crescendo_spec import contract


class TrainerEnvironmentError(ValueError):
    """A variable is present but unusable; the message names it."""


@dataclass(frozen=True)
class Environment:
    rank: int  # global rank
    world_size: int
    local_rank: int
    # TORCHELASTIC_RESTART_COUNT, exported as crescendo_trainer_worker_restarts: restarts of this
    # agent's worker group after a failure. Checked in torch 2.13's elastic agent
    # (agent/server/api.py, _invoke_run): the count is max_restarts − remaining_restarts, and
    # only the UNHEALTHY/FAILED branch decrements remaining_restarts; the HEALTHY branch that
    # restarts for waiting nodes says "membership changes do not count as retries". A trainer
    # that exits 3 because a peer left is a failure to torchrun, so a scale-down does count.
    restart_count: int
    distributed: bool  # launched by torchrun (or another launcher setting RANK/WORLD_SIZE)
    job_name: str
    namespace: str
    replica_index: int
    spec_json: str | None  # the spec the operator passes; --config wins over it
    metrics_port: int | None
    checkpoint_dir: Path | None
    trace_file: Path | None
    data_cache: Path  # parsed built-in data sets, reused across restarts

    @property
    def is_rank0(self) -> bool:
        return self.rank == 0

    @property
    def serves_metrics(self) -> bool:
        """One process per pod (node) serves /metrics: the first local process."""
        return self.local_rank == 0


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise TrainerEnvironmentError(
            f"environment variable {name}={raw!r} is not an integer"
        ) from None
    if value < minimum:
        raise TrainerEnvironmentError(
            f"environment variable {name}={value} must be >= {minimum}"
        )
    return value


def _path(env: Mapping[str, str], name: str) -> Path | None:
    raw = env.get(name)
    return Path(raw) if raw else None


def read_environment(env: Mapping[str, str] | None = None) -> Environment:
    """Read the trainer's environment (os.environ unless a mapping is given, for tests)."""
    env = os.environ if env is None else env
    world_size = _int(env, "WORLD_SIZE", 1, minimum=1)
    rank = _int(env, "RANK", 0)
    if rank >= world_size:
        raise TrainerEnvironmentError(f"RANK={rank} must be < WORLD_SIZE={world_size}")
    port = env.get(contract.ENV_METRICS_PORT)
    return Environment(
        rank=rank,
        world_size=world_size,
        local_rank=_int(env, "LOCAL_RANK", 0),
        restart_count=_int(env, "TORCHELASTIC_RESTART_COUNT", 0),
        distributed="RANK" in env and "WORLD_SIZE" in env,
        job_name=env.get(contract.ENV_JOB_NAME, "local"),
        namespace=env.get(contract.ENV_NAMESPACE, "default"),
        replica_index=_int(env, contract.ENV_REPLICA_INDEX, 0),
        spec_json=env.get(contract.ENV_SPEC_JSON) or None,
        metrics_port=_int(env, contract.ENV_METRICS_PORT, 0, minimum=0) if port else None,
        checkpoint_dir=_path(env, contract.ENV_CHECKPOINT_DIR),
        trace_file=_path(env, contract.ENV_TRACE_FILE),
        data_cache=_data_cache(env),
    )


def _data_cache(env: Mapping[str, str]) -> Path:
    explicit = _path(env, ENV_DATA_CACHE)
    if explicit is not None:
        return explicit
    base = _path(env, "XDG_CACHE_HOME") or Path(env.get("HOME", "/tmp")) / ".cache"
    return base / "crescendo" / "datasets"


# Not part of the operator contract: a user's knob (e.g. a pod volume for the parsed data sets).
ENV_DATA_CACHE = "CRESCENDO_DATA_CACHE"
