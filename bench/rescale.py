"""How long a rescale pauses training, against a bare torchrun re-rendezvous, in one run.

(a) bare: the same torchrun agents, rendezvous settings and command-line builder as the trainer,
    running bench/bare_worker.py (an all-reduce loop, no checkpoint, no model);
(b) trainer: crescendo_trainer on MNIST-5k, agents started and stopped by this script;
(c) local: the same job under `crescendo local`, rescaled by its controller (pinned with
    `crescendo local-scale`, the local twin of `kubectl scale`).
Each goes 1 → 2 → 1 agents. A pause is the time from the last step at the old world size to the
first step at the new one (both from the run trace); lost steps are the steps completed before a
restart minus the step it resumed from. Prints a table; --out writes JSON.

    python bench/rescale.py --out bench/out/rescale.json [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from crescendo_operator.local.agents import LocalPaths, free_port, start_agent, stop_agent
from crescendo_spec import JobSpec, parse_spec
from crescendo_spec.trace import read_trace, restarts

STEPS_BETWEEN = 15  # steps observed at each world size before the next change
BARE = str(Path(__file__).with_name("bare_worker.py"))


def job(port: int, bare: bool) -> JobSpec:
    spec: dict[str, Any] = {
        "gpusPerReplica": 0,
        "dataset": "mnist5k",
        "model": "cnn",
        "maxSteps": 10_000_000,
        "replicas": {"min": 1, "max": 2},
        "batch": {"initial": 64, "max": 64, "perGpuMax": 32, "policy": "fixed"},
        "checkpoint": {"everySteps": 100_000},
        "logEverySteps": 100,
        "rendezvous": {"port": port, "maxRestarts": 50},
    }
    if bare:
        # Same torchrun line, the trivial script in place of `-m crescendo_trainer`.
        from crescendo_operator.builders import torchrun_command

        line = torchrun_command("bench", parse_spec(spec), "127.0.0.1", namespace="default")
        spec["command"] = [*line[: line.index("-m")], BARE]
    return parse_spec(spec)


def world_changes(records: list[dict[str, Any]]) -> list[tuple[int, int, float]]:
    """(old world, new world, seconds from the last step at old to the first at new)."""
    out, last = [], None
    for record in records:
        if record["kind"] != "step":
            continue
        if last is not None and record["world"] != last["world"]:
            out.append((last["world"], record["world"], record["time"] - last["time"]))
        last = record
    return out


def cycle_result(paths: LocalPaths) -> dict[str, Any]:
    """The 1 → 2 and 2 → 1 pauses and the steps lost, from one cycle's run trace."""
    records = read_trace(paths.trace)
    changes = {(a, b): s for a, b, s in world_changes(records)}
    return {
        "up_s": changes[(1, 2)],
        "down_s": changes[(2, 1)],
        "lost_steps": sum(r.lost_steps for r in restarts(records)),
    }


def wait_steps(paths: LocalPaths, world: int, count: int, after: float, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        steps = [r for r in read_trace(paths.trace)
                 if r["kind"] == "step" and r["world"] == world and r["time"] > after]
        if len(steps) >= count:
            return
        time.sleep(0.1)
    raise TimeoutError(
        f"no {count} steps at world {world} within {timeout} s (see {paths.run_dir})"
    )


def cycle(run_dir: Path, bare: bool) -> dict[str, Any]:
    """1 → 2 → 1 agents; the pauses and lost steps of that cycle."""
    spec, paths = job(free_port(), bare), LocalPaths(run_dir)
    agents = {0: start_agent("bench", "default", 0, spec, paths, free_port())}
    try:
        wait_steps(paths, 1, STEPS_BETWEEN, 0.0, 120)
        agents[1] = start_agent("bench", "default", 1, spec, paths, free_port())
        wait_steps(paths, 2, STEPS_BETWEEN, 0.0, 120)
        mark = time.time()
        stop_agent(agents.pop(1))
        wait_steps(paths, 1, STEPS_BETWEEN, mark, 120)
    finally:
        for agent in agents.values():
            stop_agent(agent, grace_seconds=30)
    return cycle_result(paths)


def local_cycle(run_dir: Path) -> dict[str, Any]:
    """1 → 2 → 1 replicas through `crescendo local`, pinned like `kubectl scale`."""
    spec = job(free_port(), bare=False).model_dump(by_alias=True, exclude_none=True)
    spec["scaling"] = {"cooldownSeconds": 0}
    job_file = run_dir.parent / f"{run_dir.name}.yaml"
    job_file.write_text(json.dumps({"apiVersion": "crescendo.dev/v1alpha1",
                                    "kind": "AdaptiveBatchJob", "metadata": {"name": "bench"},
                                    "spec": spec}))
    paths = LocalPaths(run_dir)
    cli = [sys.executable, "-m", "crescendo_operator.cli"]
    controller = subprocess.Popen(
        [*cli, "local", str(job_file), "--run-dir", str(run_dir), "--max-replicas", "2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_steps(paths, 1, STEPS_BETWEEN, 0.0, 120)
        subprocess.run([*cli, "local-scale", str(run_dir), "2"], check=True)
        wait_steps(paths, 2, STEPS_BETWEEN, 0.0, 120)
        mark = time.time()
        subprocess.run([*cli, "local-scale", str(run_dir), "1"], check=True)
        wait_steps(paths, 1, STEPS_BETWEEN, mark, 120)
    finally:
        controller.send_signal(signal.SIGINT)
        controller.wait(timeout=120)
    return cycle_result(paths)


def measure(repeats: int, root: Path) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {"bare": [], "trainer": [], "local": []}
    for i in range(repeats):
        for kind in runs:
            run_dir = root / f"{kind}-{i}"
            if kind == "local":
                runs[kind].append(local_cycle(run_dir))
            else:
                runs[kind].append(cycle(run_dir, bare=kind == "bare"))
            print(f"  {kind} cycle {i}: {runs[kind][-1]}", file=sys.stderr)

    def median(kind: str, key: str) -> float:
        return float(statistics.median(r[key] for r in runs[kind]))

    result = {
        "bare_up_s": median("bare", "up_s"),
        "bare_down_s": median("bare", "down_s"),
        "up_pause_s": median("trainer", "up_s"),
        "down_pause_s": median("trainer", "down_s"),
        "lost_steps": sum(r["lost_steps"] for r in runs["trainer"]),
        "local_up_s": median("local", "up_s"),
        "local_down_s": median("local", "down_s"),
        "local_lost_steps": sum(r["lost_steps"] for r in runs["local"]),
        "repeats": repeats,
        "torch": torch.__version__,
        "host": f"{platform.node()} {platform.machine()} {platform.processor() or ''}".strip(),
        "cpus": __import__("os").cpu_count(),
    }
    result["up_ratio"] = result["up_pause_s"] / result["bare_up_s"]
    result["down_ratio"] = result["down_pause_s"] / result["bare_down_s"]
    result["local_up_ratio"] = result["local_up_s"] / result["bare_up_s"]
    result["local_down_ratio"] = result["local_down_s"] / result["bare_down_s"]
    return result


def table(result: dict[str, Any]) -> str:
    r = result
    rows = [
        ("1→2 (join)", r["bare_up_s"], r["up_pause_s"], r["up_ratio"], r["local_up_s"],
         r["local_up_ratio"]),
        ("2→1 (leave)", r["bare_down_s"], r["down_pause_s"], r["down_ratio"], r["local_down_s"],
         r["local_down_ratio"]),
    ]
    lines = [f"{'rescale':<12} {'bare s':>8} {'trainer s':>10} {'ratio':>6} "
             f"{'local s':>8} {'ratio':>6}"]
    lines += [f"{n:<12} {a:>8.2f} {b:>10.2f} {x:>6.2f} {c:>8.2f} {y:>6.2f}"
              for n, a, b, x, c, y in rows]
    lines.append(f"lost steps: trainer {r['lost_steps']}, local {r['local_lost_steps']}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    parser.add_argument("--repeats", type=int, default=1, help="1→2→1 cycles per kind")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="crescendo-rescale-") as tmp:
        result = measure(args.repeats, Path(tmp))
    print(table(result))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
