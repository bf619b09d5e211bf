"""`crescendo local`: one AdaptiveBatchJob on this machine, scaled by the operator's controller.

Wires the pieces: the job file is validated by crescendo_spec (the operator's messages), mapped
for one machine (free rendezvous port, replicas.max capped by --max-replicas), and run by
`controller.reconcile_once` (the operator's own reconcile) against the local process backend and
a decision source (the replicas' /metrics, or Prometheus with --prometheus-url). Status goes to
status.json in the run directory each tick. Ctrl-C stops every replica with SIGTERM (the
trainers checkpoint) and leaves nothing running; `--resume` continues from the checkpoint.
With --baseline, baseline.py runs the job and then its fixed-B0 baseline through `run_job`.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from crescendo_spec.atomic import atomic_write
from crescendo_spec.model import JobSpec
from crescendo_spec.parse import load_document, parse_spec, spec_of
from crescendo_spec.trace import read_trace
from rich.console import Console

from crescendo_operator.controller import DecisionSource, JobState, reconcile_once
from crescendo_operator.local.agents import LocalPaths, free_port, local_script, port_is_free
from crescendo_operator.local.backend import LocalBackend
from crescendo_operator.local.display import Display
from crescendo_operator.local.report import plot, summarize, summary_table
from crescendo_operator.metrics_source import DirectScrapeSource, PrometheusSource
from crescendo_operator.status import is_terminal, phase_of

NAMESPACE = "local"
RATE_WINDOW_SECONDS = 5.0


class LocalError(RuntimeError):
    """A problem the user must fix before a local run can start; the message says how."""


@dataclass(frozen=True)
class LocalOptions:
    job_file: Path
    run_dir: Path | None = None
    resume: bool = False
    max_replicas: int | None = None  # default: the CPU count
    prometheus_url: str | None = None
    rdzv_port: int | None = None  # default: a free port
    interval_seconds: float = 1.0
    baseline: bool = False  # then the fixed-B0 baseline in <run-dir>/baseline, and a comparison


@dataclass(frozen=True)
class Outcome:
    status: dict[str, Any]
    run_dir: Path
    interrupted: bool
    plot: Path | None
    comparison: Path | None = None  # comparison.json, with --baseline once both runs succeeded

    @property
    def succeeded(self) -> bool:
        return phase_of(self.status.get("conditions") or []) == "Succeeded" and not self.interrupted


def job_name_of(document: dict[str, Any], job_file: Path) -> str:
    name = (document.get("metadata") or {}).get("name") or job_file.stem
    return re.sub(r"[^a-z0-9-]", "-", str(name).lower())


def for_this_machine(spec: JobSpec, max_replicas: int, rdzv_port: int) -> JobSpec:
    """The spec with replicas capped to what the host can run and a usable rendezvous port."""
    cap = max(1, max_replicas)
    r = spec.replicas
    replicas = r.model_copy(
        update={
            "max": min(r.max, cap),
            "min": min(r.min, cap),
            "initial": None if r.initial is None else min(r.initial, cap),
        }
    )
    return with_rendezvous_port(spec.model_copy(update={"replicas": replicas}), rdzv_port)


def with_rendezvous_port(spec: JobSpec, port: int) -> JobSpec:
    rendezvous = spec.rendezvous.model_copy(update={"port": port})
    return spec.model_copy(update={"rendezvous": rendezvous})


def prepare(options: LocalOptions) -> tuple[str, JobSpec, LocalPaths]:
    """Validate everything a run needs before any process starts; LocalError says what to fix."""
    name, spec = load_job(options)
    paths = LocalPaths(options.run_dir or Path("runs") / name)
    claim_run_dir(paths, options.resume)
    return name, spec, paths


def load_job(options: LocalOptions) -> tuple[str, JobSpec]:
    """The job's name and its spec mapped for this machine (SpecError, LocalError if unfit)."""
    if importlib.util.find_spec("torch") is None:
        raise LocalError(
            "torch is not installed in this environment: "
            "pip install -c constraints.txt -e '.[local]' (or run `make demo`)"
        )
    document = load_document(options.job_file)
    spec = parse_spec(spec_of(document))  # SpecError: the operator's own messages
    if spec.script is not None and not local_script(spec.script).is_file():
        raise LocalError(
            f"script {spec.script!r} is not a file: a relative path is taken from the directory "
            f"crescendo local runs in ({Path.cwd()})"
        )
    name = job_name_of(document, options.job_file)
    port = options.rdzv_port if options.rdzv_port is not None else free_port()
    if not port_is_free(port):
        raise LocalError(f"rendezvous port {port} (--rdzv-port) is in use: pick another")
    max_replicas = options.max_replicas or os.cpu_count() or 1
    return name, for_this_machine(spec, max_replicas, port)


def has_checkpoints(paths: LocalPaths) -> bool:
    return any(paths.checkpoints.glob("ckpt-*.pt"))


def claim_run_dir(paths: LocalPaths, resume: bool) -> None:
    """Check that the directory fits a new or a resumed run, and clear what a new run must not
    inherit; LocalError says what to pass instead."""
    checkpointed = has_checkpoints(paths)
    if checkpointed and not resume:
        raise LocalError(
            f"{paths.run_dir} holds checkpoints of an earlier run: pass --resume to continue it, "
            "or --run-dir DIR for a new run"
        )
    if resume and not checkpointed:
        raise LocalError(f"--resume: {paths.checkpoints} holds no checkpoint to continue from")
    if not checkpointed:  # a new run: no record or pin of an earlier one applies
        paths.trace.unlink(missing_ok=True)
        paths.manual_replicas.unlink(missing_ok=True)
        paths.sessions.unlink(missing_ok=True)
        # Whatever a run that died before its first checkpoint left (the trainer's high-water
        # record would count that run's steps as lost by this one).
        for leftover in paths.checkpoints.glob("*"):
            if leftover.is_file():
                leftover.unlink()


def write_json(path: Path, data: Any, indent: int | None = None) -> None:
    """Whole or not at all (crescendo_spec.atomic): a reader never sees half a file. Not
    fsynced: the status is rewritten every tick."""
    with atomic_write(path, durable=False) as handle:
        handle.write(json.dumps(data, indent=indent).encode())


def record_start(paths: LocalPaths) -> None:
    """Note when this invocation started: wall times count from it (compare.wall_seconds)."""
    paths.run_dir.mkdir(parents=True, exist_ok=True)
    with paths.sessions.open("a") as handle:
        handle.write(json.dumps({"start": time.time()}) + "\n")


def session_starts(paths: LocalPaths) -> list[float]:
    if not paths.sessions.exists():
        return []
    return [float(json.loads(line)["start"]) for line in paths.sessions.read_text().splitlines()
            if line.strip()]


def write_status(paths: LocalPaths, status: dict[str, Any]) -> None:
    write_json(paths.run_dir / "status.json", status, indent=2)


def write_targets(paths: LocalPaths, backend: LocalBackend, name: str) -> None:
    """A Prometheus file_sd target list of the live replicas (for --prometheus-url runs)."""
    targets = [
        {"targets": [f"127.0.0.1:{a.metrics_port}"], "labels": {"replica": str(i)}}
        for i, a in backend.agents.items()
        if a.stopping is None
    ]
    write_json(paths.run_dir / "prometheus-targets.json", targets)


def manual_replicas(paths: LocalPaths) -> int | None:
    """The pin `crescendo local-scale` left in the run directory (kubectl scale's local twin)."""
    try:
        text = paths.manual_replicas.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() and int(text) > 0 else None


def with_pin(spec: JobSpec, manual: int | None) -> JobSpec:
    if manual == spec.replicas.manual:
        return spec
    replicas = spec.replicas.model_copy(update={"manual": manual})
    return spec.model_copy(update={"replicas": replicas})


def samples_per_second(steps: list[dict[str, Any]]) -> float:
    if len(steps) < 2:
        return 0.0
    recent = [r for r in steps if r["time"] >= steps[-1]["time"] - RATE_WINDOW_SECONDS]
    span = recent[-1]["time"] - recent[0]["time"]
    return sum(r["batch"] for r in recent[1:]) / span if span > 0 else 0.0


async def control(
    name: str,
    spec: JobSpec,
    backend: LocalBackend,
    source: DecisionSource,
    display: Display,
    interval: float,
    stop: asyncio.Event,
) -> dict[str, Any]:
    """The operator's reconcile, every `interval` seconds, until the job ends or `stop` is set."""
    state = JobState(generation=1)
    while True:
        pinned = with_pin(spec, manual_replicas(backend.paths))
        plan = await reconcile_once(name, NAMESPACE, pinned, backend, source, state)
        state = JobState(
            status=plan.status,
            last_scale_time=plan.last_scale_time or state.last_scale_time,
            generation=1,
        )
        write_status(backend.paths, plan.status)
        write_targets(backend.paths, backend, name)
        for event in plan.events:
            display.event(f"{event.reason}: {event.message}")
        steps = [r for r in read_trace(backend.paths.trace) if r["kind"] == "step"]
        display.update(plan.status, steps[-1] if steps else None, samples_per_second(steps))
        if is_terminal(plan.status) or stop.is_set():
            return plan.status
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)


async def run(options: LocalOptions, console: Console) -> Outcome:
    """The job alone (baseline.py runs it with its baseline)."""
    name, spec, paths = prepare(options)
    return await run_job(name, spec, paths, options, console, resume_hint(options, paths))


def resume_hint(options: LocalOptions, paths: LocalPaths) -> str:
    """The command that continues this invocation (with its baseline, if it has one)."""
    baseline = " --baseline" if options.baseline else ""
    return f"crescendo local {options.job_file} --run-dir {paths.run_dir} --resume{baseline}"


async def run_job(
    name: str, spec: JobSpec, paths: LocalPaths, options: LocalOptions, console: Console,
    hint: str,
) -> Outcome:
    """One job on this machine until it ends or Ctrl-C; then its summary and plot."""
    console.print(f"job [bold]{name}[/bold]: run directory {paths.run_dir}", highlight=False)
    record_start(paths)
    backend = LocalBackend(name, NAMESPACE, spec, paths)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    display = Display(console)
    started = time.monotonic()
    try:
        async with httpx.AsyncClient(timeout=2.0) as client:
            source: DecisionSource = (
                PrometheusSource(options.prometheus_url, client)
                if options.prometheus_url
                else DirectScrapeSource(client)
            )
            status = await control(name, spec, backend, source, display, options.interval_seconds,
                                   stop)
    finally:
        display.close()
        await backend.close()  # SIGTERM to whatever still runs: checkpoint, then exit
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    records = read_trace(paths.trace)
    # A language model's batch counts sequences of seq_len tokens: the summary shows both.
    tokens_per_sample = spec.language.seq_len if spec.is_language_model else None
    summary = summarize(records, time.monotonic() - started, tokens_per_sample)
    console.print(summary_table(summary))
    picture = plot(records, paths.run_dir / "plot.png", spec.procs_per_replica) if records else None
    if picture is not None:
        console.print(f"plot: {picture}", highlight=False)
    console.print(f"status: {paths.run_dir / 'status.json'}", highlight=False)
    if stop.is_set():
        console.print(
            f"stopped; checkpoints kept in {paths.checkpoints}. Continue with:\n  {hint}",
            highlight=False,
        )
    return Outcome(status, paths.run_dir, stop.is_set(), picture)
