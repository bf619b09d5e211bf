"""The trainer's one reader of the environment."""

from __future__ import annotations

from pathlib import Path

import pytest
from crescendo_spec import contract
from crescendo_trainer.environment import TrainerEnvironmentError, read_environment


def test_torchrun_and_operator_variables_are_read() -> None:
    env = read_environment({
        "RANK": "2", "WORLD_SIZE": "3", "LOCAL_RANK": "0", "TORCHELASTIC_RESTART_COUNT": "4",
        contract.ENV_JOB_NAME: "mnist", contract.ENV_NAMESPACE: "team",
        contract.ENV_REPLICA_INDEX: "1", contract.ENV_METRICS_PORT: "9500",
        contract.ENV_CHECKPOINT_DIR: "/ckpt",
    })
    assert (env.rank, env.world_size, env.local_rank, env.restart_count) == (2, 3, 0, 4)
    assert env.distributed and not env.is_rank0 and env.serves_metrics
    assert (env.job_name, env.namespace, env.replica_index) == ("mnist", "team", 1)
    assert env.metrics_port == 9500 and env.checkpoint_dir == Path("/ckpt")


def test_a_plain_process_is_rank_0_of_1() -> None:
    env = read_environment({})
    assert (env.rank, env.world_size, env.distributed) == (0, 1, False)
    assert env.metrics_port is None and env.spec_json is None


@pytest.mark.parametrize(
    ("variables", "message"),
    [({"WORLD_SIZE": "two"}, "WORLD_SIZE='two' is not an integer"),
     ({"RANK": "3", "WORLD_SIZE": "2"}, "RANK=3 must be < WORLD_SIZE=2"),
     ({"WORLD_SIZE": "0"}, "WORLD_SIZE=0 must be >= 1")],
)
def test_bad_values_name_the_variable(variables: dict[str, str], message: str) -> None:
    with pytest.raises(TrainerEnvironmentError, match=message):
        read_environment(variables)
