"""`crescendo local --baseline`: the job, then its fixed-B0 baseline, then the comparison.

Wiring only: the baseline's spec and the comparison are compare.py's, each run is runner.py's
`run_job`. The job runs in <run-dir>, the baseline (compare.baseline_spec, named
<job>-baseline) in <run-dir>/baseline, and comparison.json and comparison.png go to <run-dir>.

One after the other, not side by side: each run then has the whole machine, so neither's time
is the other's contention (on 2 CPU cores one job already uses both), and the wall-time ratio
measures the policy. Both run directories are checked before the first process starts. The
baseline starts only when the job succeeded; a failure or Ctrl-C stops there.

With --resume, each of the two runs is taken where it stands: one whose trace is done is not run
again, an interrupted one continues from its checkpoint, and a baseline that never started
starts. So `--resume --baseline` also adds the baseline to a run that finished without one.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from crescendo_spec.model import JobSpec
from crescendo_spec.trace import read_trace
from rich.console import Console

from crescendo_operator.local.agents import LocalPaths, free_port
from crescendo_operator.local.compare import (
    RunTrace,
    baseline_label,
    baseline_spec,
    compare,
    comparison_json,
    comparison_table,
    plot_comparison,
)
from crescendo_operator.local.runner import (
    LocalError,
    LocalOptions,
    Outcome,
    claim_run_dir,
    has_checkpoints,
    prepare,
    resume_hint,
    run_job,
    session_starts,
    with_rendezvous_port,
    write_json,
)


def finished(paths: LocalPaths) -> bool:
    """Whether the run's trainers reached their budget (the trace's done record)."""
    return any(r["kind"] == "done" for r in read_trace(paths.trace))


def prepare_baseline(
    options: LocalOptions, name: str, spec: JobSpec, paths: LocalPaths
) -> tuple[str, JobSpec, LocalPaths]:
    """The fixed-B0 twin of a prepared job, in <run-dir>/baseline; LocalError if it cannot run."""
    if spec.batch.policy == "fixed":
        raise LocalError("--baseline: batch.policy is already fixed; the job is its own baseline")
    twin = LocalPaths(paths.run_dir / "baseline")
    if not (options.resume and finished(twin)):
        # --resume continues a baseline that has a checkpoint, and starts one that has none.
        claim_run_dir(twin, options.resume and has_checkpoints(twin))
    return f"{name}-baseline", baseline_spec(spec), twin


async def run_with_baseline(options: LocalOptions, console: Console) -> Outcome:
    """The job, then its baseline; the comparison once both succeeded."""
    name, spec, paths = prepare(options)
    twin_name, twin_spec, twin_paths = prepare_baseline(options, name, spec, paths)
    hint = resume_hint(options, paths)
    first = await run_unless_finished(name, spec, paths, options, console, hint)
    if not first.succeeded:
        return first
    if options.rdzv_port is None:  # the free port picked at the start may be taken by now
        twin_spec = with_rendezvous_port(twin_spec, free_port())
    second = await run_unless_finished(twin_name, twin_spec, twin_paths, options, console, hint)
    if not second.succeeded:
        return second
    comparison = report_comparison(spec, paths, twin_paths, console)
    return replace(second, run_dir=paths.run_dir, comparison=comparison)


async def run_unless_finished(
    name: str, spec: JobSpec, paths: LocalPaths, options: LocalOptions, console: Console,
    hint: str,
) -> Outcome:
    """`run_job`, except that with --resume a run that reached its budget is taken as it is."""
    if not (options.resume and finished(paths)):
        return await run_job(name, spec, paths, options, console, hint)
    console.print(f"job [bold]{name}[/bold]: finished already in {paths.run_dir}",
                  highlight=False)
    status_file = paths.run_dir / "status.json"
    status = json.loads(status_file.read_text()) if status_file.exists() else {}
    picture = paths.run_dir / "plot.png"
    return Outcome(status, paths.run_dir, False, picture if picture.exists() else None)


def report_comparison(
    spec: JobSpec, paths: LocalPaths, twin: LocalPaths, console: Console
) -> Path | None:
    """Print the comparison table; write comparison.json and comparison.png into <run-dir>."""
    policy, baseline = (
        RunTrace(label, read_trace(p.trace), session_starts(p))
        for label, p in ((spec.batch.policy, paths), (baseline_label(spec), twin))
    )
    try:
        comparison = compare(policy, baseline)
    except ValueError as exc:  # a script that never evaluates: nothing to compare
        console.print(f"no comparison: {exc}", highlight=False)
        return None
    console.print(comparison_table(comparison))
    data = paths.run_dir / "comparison.json"
    write_json(data, comparison_json(comparison), indent=2)
    picture = plot_comparison((policy, baseline), comparison, paths.run_dir / "comparison.png",
                              spec.procs_per_replica)
    console.print(f"comparison: {data}", highlight=False)
    console.print(f"comparison plot: {picture}", highlight=False)
    return data
