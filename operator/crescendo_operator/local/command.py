"""The `crescendo local` subcommand: its arguments and exit codes; runner.py does the work.

Exit codes: 0 the job succeeded, 1 it failed or was interrupted (checkpoint kept), 2 the job
file or the options are invalid (nothing was started).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from crescendo_spec.parse import SpecError
from rich.console import Console

from crescendo_operator.local.backend import LocalBackendError
from crescendo_operator.local.runner import LocalError, LocalOptions, run
from crescendo_operator.status import phase_of

EXIT_INVALID = 2


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    local = sub.add_parser(
        "local", help="run a job on this machine: replicas are local torchrun agents"
    )
    local.add_argument("job", type=Path, help="AdaptiveBatchJob manifest (or bare spec) YAML")
    local.add_argument("--run-dir", type=Path, help="where checkpoints, logs, status and plot go "
                       "(default runs/<job name>)")
    local.add_argument("--resume", action="store_true", help="continue from the run directory's "
                       "checkpoint")
    local.add_argument("--max-replicas", type=int, help="cap on replicas (default: CPU count)")
    local.add_argument("--prometheus-url", help="read decisions through this Prometheus "
                       "(default: scrape the replicas' /metrics directly)")
    local.add_argument("--rdzv-port", type=int, help="rendezvous port (default: a free one)")
    local.add_argument("--interval", type=float, default=1.0, help="controller period, seconds")
    local.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    console = Console()
    if args.max_replicas is not None and args.max_replicas < 1:
        console.print("--max-replicas must be >= 1", style="red")
        return EXIT_INVALID
    options = LocalOptions(
        job_file=args.job,
        run_dir=args.run_dir,
        resume=args.resume,
        max_replicas=args.max_replicas,
        prometheus_url=args.prometheus_url,
        rdzv_port=args.rdzv_port,
        interval_seconds=args.interval,
    )
    try:
        outcome = asyncio.run(run(options, console))
    except SpecError as exc:
        print(f"crescendo local: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except (LocalError, LocalBackendError) as exc:
        print(f"crescendo local: {exc}", file=sys.stderr)
        return EXIT_INVALID
    phase = phase_of(outcome.status.get("conditions") or [])
    return 0 if phase == "Succeeded" and not outcome.interrupted else 1
