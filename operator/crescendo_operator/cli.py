"""The `crescendo` command: run the operator, print the CRD, validate a job file.

Owns argument parsing and exit codes only (0 ok, 2 invalid input, 1 configuration error); the
work is done by crescendo_spec (CRD, validation) and the operator's handlers.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from crescendo_spec.crd import crd_yaml
from crescendo_spec.parse import SpecError, load_spec

EXIT_INVALID = 2
EXIT_CONFIG = 1


def _operator(args: argparse.Namespace) -> int:
    import kopf  # heavy: only for this subcommand

    from crescendo_operator import config
    from crescendo_operator.handlers import register

    try:
        cfg = config.load()
    except config.ConfigError as exc:
        print(f"crescendo operator: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    kopf.configure(verbose=args.verbose)  # kopf's log format and levels
    registry = kopf.OperatorRegistry()
    register(registry, cfg)
    asyncio.run(
        kopf.operator(
            registry=registry,
            standalone=True,
            clusterwide=not cfg.namespaces,
            namespaces=list(cfg.namespaces),
            liveness_endpoint=args.liveness,
        )
    )
    return 0


def _crd(_: argparse.Namespace) -> int:
    sys.stdout.write(crd_yaml())
    return 0


def _validate(args: argparse.Namespace) -> int:
    status = 0
    for path in args.files:
        try:
            spec = load_spec(Path(path))
        except SpecError as exc:
            print(f"{path}: invalid", file=sys.stderr)
            for problem in exc.problems:
                print(f"  {problem}", file=sys.stderr)
            status = EXIT_INVALID
            continue
        budget = ", ".join(f"{n} {unit}" for n, unit in (
            (spec.epochs, "epochs"), (spec.max_steps, "steps"), (spec.max_samples, "samples"))
            if n is not None)
        print(
            f"{path}: valid ({spec.batch.policy}, batch {spec.batch.initial}→{spec.batch.max}, "
            f"replicas {spec.replicas.min}..{spec.replicas.max}, {budget})"
        )
    return status


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="crescendo", description=__doc__.splitlines()[0])
    sub = top.add_subparsers(dest="command", required=True)
    run = sub.add_parser("operator", help="run the kopf operator (CRESCENDO_* configure it)")
    run.add_argument("--liveness", default=None, help="e.g. http://0.0.0.0:8081/healthz")
    run.add_argument("--verbose", action="store_true", help="debug logging")
    run.set_defaults(func=_operator)
    sub.add_parser("crd", help="print the AdaptiveBatchJob CRD as YAML").set_defaults(func=_crd)
    check = sub.add_parser("validate", help="validate job files; exit 2 if any is invalid")
    check.add_argument("files", nargs="+", metavar="FILE")
    check.set_defaults(func=_validate)
    from crescendo_operator.local.command import add_parser as add_local

    add_local(sub)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
