"""`launch(main)`: run a training function as an elastic Crescendo worker under torchrun; it wires.

It reads the environment (environment.py) and the job's spec (--config FILE, or
CRESCENDO_SPEC_JSON as the operator and `crescendo local` set it), installs the graceful stop
(SIGTERM/SIGINT), serves /metrics from the first process of each node, joins the process group
with the job's collective timeout, calls `main(job)` and leaves with the exit status torchrun
reads:
    0  the budget is reached, or this process was itself asked to stop (checkpoint written)
    3  a peer left or was asked to stop: torchrun re-forms the group at the new world size
    2  an invalid spec, environment, model or data set
    1  no usable checkpoint in a non-empty directory (never a silent restart at step 0), or a bug
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from crescendo_spec import JobSpec, SpecError, load_spec, parse_spec

from crescendo_trainer import distributed
from crescendo_trainer.checkpoint import CheckpointError
from crescendo_trainer.datasets import DatasetError
from crescendo_trainer.environment import Environment, TrainerEnvironmentError, read_environment
from crescendo_trainer.exporter import TrainerMetrics
from crescendo_trainer.job import Job, Outcome
from crescendo_trainer.models import ModelError
from crescendo_trainer.signals import StopFlag

EXIT_RESTART = 3
EXIT_INVALID = 2
EXIT_FAILED = 1

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


def run(
    main: Callable[[Job], None], argv: Sequence[str] | None = None, *, usage: str | None = None
) -> int:
    """Set up, call `main(job)`, and return the exit status (see the module docstring).

    Only --config is read from the command line; the rest is the script's. With `usage` (the
    built-in trainer's), --help prints it; a script keeps its own --help.
    """
    parser = argparse.ArgumentParser(description=usage, add_help=usage is not None)
    parser.add_argument("--config", type=Path, help="AdaptiveBatchJob manifest or spec (YAML)")
    args, _ = parser.parse_known_args(argv)  # the rest is the script's own
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
        job = Job(spec, env, metrics, stop)
        distributed.join(env, job.device, spec.rendezvous.collective_timeout_seconds)
        job.telemetry.phase("group")
    except (DatasetError, ModelError, SpecError, ValueError) as exc:
        log.error("%s", exc)
        return EXIT_INVALID
    return _conduct(main, job, stop)


def _conduct(main: Callable[[Job], None], job: Job, stop: StopFlag) -> int:
    try:
        main(job)
    except (DatasetError, ModelError, SpecError) as exc:
        log.error("%s", exc)
        return EXIT_INVALID
    except CheckpointError as exc:
        log.error("%s", exc)
        return EXIT_FAILED
    except Exception as exc:
        if not distributed.is_peer_lost(exc):
            raise
        job.peer_lost(exc)
    finally:
        job.close()
    if job.outcome is None:
        log.error("the training function returned before the job ended: loop on job.running")
        return EXIT_FAILED
    log.info("trainer %s at step %d", job.outcome.value, job.progress.step)
    return exit_code(job.outcome, stop)


def exit_now(code: int) -> None:
    """Flush and leave at once. No process-group teardown or interpreter shutdown: when a peer
    has gone, destroying the group can block on the store its rank 0 hosted, and the agent's
    next rendezvous waits for this process (measured: a 30 s SIGKILL timeout per scale-down)."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def launch(main: Callable[[Job], None], *, usage: str | None = None) -> None:
    """The whole life of a worker: `run(main)`, then leave with its exit status."""
    exit_now(run(main, usage=usage))
