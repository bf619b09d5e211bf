"""The `crescendo local` subcommand: its arguments and exit codes; runner.py does the work.

Exit codes: 0 the job succeeded (with --baseline: and its baseline), 1 it failed or was
interrupted (checkpoint kept), 2 the job file or the options are invalid (nothing was started).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from crescendo_spec.parse import SpecError
from rich.console import Console

from crescendo_operator.local.agents import LocalPaths
from crescendo_operator.local.backend import LocalBackendError
from crescendo_operator.local.baseline import run_with_baseline
from crescendo_operator.local.runner import LocalError, LocalOptions, run

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
    local.add_argument("--baseline", action="store_true", help="then run the same job with "
                       "batch.policy fixed (B stays batch.initial) in <run-dir>/baseline, and "
                       "compare: a table, comparison.json and comparison.png in the run directory")
    local.set_defaults(func=main)
    scale = sub.add_parser(
        "local-scale",
        help="pin the replicas of a running `crescendo local` job (like kubectl scale), or "
        "'auto' to let the trainers' decisions drive it again",
    )
    scale.add_argument("run_dir", type=Path, help="the job's run directory")
    scale.add_argument("replicas", help="a replica count >= 1, or 'auto'")
    scale.set_defaults(func=pin)


def pin(args: argparse.Namespace) -> int:
    """Write (or clear) the run directory's pin; the running controller applies it next tick."""
    paths = LocalPaths(args.run_dir)
    if not paths.run_dir.is_dir():
        print(f"crescendo local-scale: {paths.run_dir} is not a run directory", file=sys.stderr)
        return EXIT_INVALID
    if args.replicas == "auto":
        paths.manual_replicas.unlink(missing_ok=True)
        return 0
    if not args.replicas.isdigit() or int(args.replicas) < 1:
        print(f"crescendo local-scale: replicas must be >= 1 or 'auto' (got {args.replicas!r})",
              file=sys.stderr)
        return EXIT_INVALID
    paths.manual_replicas.write_text(f"{int(args.replicas)}\n")
    return 0


def main(args: argparse.Namespace) -> int:
    # soft_wrap: a long line (a run directory's path) stays one line in a pipe or a log, where
    # rich would otherwise break it at 80 columns and copy-paste or grep would get half a path.
    console = Console(soft_wrap=True)
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
        baseline=args.baseline,
    )
    runner = run_with_baseline if args.baseline else run
    try:
        outcome = asyncio.run(runner(options, console))
    except SpecError as exc:
        print(f"crescendo local: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except (LocalError, LocalBackendError) as exc:
        print(f"crescendo local: {exc}", file=sys.stderr)
        return EXIT_INVALID
    return 0 if outcome.succeeded else 1
