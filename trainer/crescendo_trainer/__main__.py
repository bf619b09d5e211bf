"""`python -m crescendo_trainer [--config job.yaml]`: the torchrun entry point; it only wires.

The spec comes from --config (an AdaptiveBatchJob manifest or its bare spec) or, on a worker
pod, from CRESCENDO_SPEC_JSON. Exit status, as torchrun reads it: 0 when the budget is reached
or when this process was itself asked to stop (SIGTERM: checkpoint written); 3 when it stopped
because a peer left or was asked to stop, so torchrun re-forms the group at the new world size;
2 for an invalid spec or environment; 1 for anything else.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from crescendo_spec import JobSpec, SpecError, load_spec, parse_spec

from crescendo_trainer import distributed
from crescendo_trainer.checkpoint import CheckpointError
from crescendo_trainer.datasets import DatasetError
from crescendo_trainer.environment import Environment, TrainerEnvironmentError, read_environment
from crescendo_trainer.exporter import TrainerMetrics
from crescendo_trainer.loop import Outcome, Trainer
from crescendo_trainer.models import ModelError
from crescendo_trainer.signals import StopFlag

EXIT_RESTART = 3
EXIT_INVALID = 2

log = logging.getLogger("crescendo_trainer")


def load_job(config: Path | None, env: Environment) -> JobSpec:
    if config is not None:
        return load_spec(config)
    if env.spec_json:
        try:
            return parse_spec(json.loads(env.spec_json))
        except json.JSONDecodeError as exc:
            raise SpecError([f"CRESCENDO_SPEC_JSON: not valid JSON ({exc})"]) from None
    raise SpecError(["no job: pass --config FILE or set CRESCENDO_SPEC_JSON"])


def exit_code(outcome: Outcome, stop: StopFlag) -> int:
    if outcome is Outcome.DONE or (outcome is Outcome.STOPPED and stop.raised):
        return 0
    return EXIT_RESTART


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="crescendo_trainer", description=__doc__)
    parser.add_argument("--config", type=Path, help="AdaptiveBatchJob manifest or spec (YAML)")
    args = parser.parse_args(argv)
    stop = StopFlag().install()
    try:
        env = read_environment()
        spec = load_job(args.config, env)
    except (SpecError, TrainerEnvironmentError) as exc:
        print(f"crescendo_trainer: {exc}", file=sys.stderr)
        return EXIT_INVALID
    logging.basicConfig(
        level=logging.INFO if env.is_rank0 else logging.WARNING,
        format=f"%(asctime)s rank{env.rank}/{env.world_size} %(levelname)s %(message)s",
    )
    metrics = TrainerMetrics(env.job_name, env.namespace)
    metrics.worker_restarts.set(env.restart_count)
    if env.serves_metrics:
        port = spec.metrics.port if env.metrics_port is None else env.metrics_port
        try:
            metrics.serve(port)
        except OSError as exc:
            log.error("cannot serve /metrics on port %d (metrics.port): %s", port, exc)
            return EXIT_INVALID
    try:
        trainer = Trainer(spec, env, metrics, stop)
        distributed.join(env, trainer.device, spec.rendezvous.collective_timeout_seconds)
        outcome = trainer.run()
    except (DatasetError, ModelError, SpecError) as exc:
        log.error("%s", exc)
        return EXIT_INVALID
    except CheckpointError as exc:
        log.error("%s", exc)
        return 1
    log.info("trainer %s at step %d", outcome.value, trainer.progress.step)
    return exit_code(outcome, stop)


def exit_now(code: int) -> None:
    """Flush and leave at once. No process-group teardown or interpreter shutdown: when a peer
    has gone, destroying the group can block on the store its rank 0 hosted, and the agent's
    next rendezvous waits for this process (measured: a 30 s SIGKILL timeout per scale-down)."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_now(main())
