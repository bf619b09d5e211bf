"""Starting and stopping one replica as a local torchrun agent.

The command line and environment are exactly the operator's pod builder's (`torchrun_command`,
`worker_env`), with four local mappings: the rendezvous host is 127.0.0.1, `torchrun` is this
interpreter's `-m torch.distributed.run`, every replica gets its own metrics port (pods have
their own IPs; local processes share one), and a relative `script` is made absolute against the
directory `crescendo local` was started in (`local_script`). That directory is where a user
runs `python train.py` from, and the agents inherit it as their working directory (no `cwd` is
given), so `-m <module>` finds a module there too; the absolute path keeps the script found if
that ever changes, and names the file in torchrun's log. Each agent leads its own session, so a
stop reaches the agent and the trainers it started (found through psutil: torchrun puts
each trainer in a session of its own), and nothing is left behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import psutil
from crescendo_spec import contract
from crescendo_spec.model import JobSpec

from crescendo_operator.builders import torchrun_command, worker_env

LOCAL_HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port nobody listens on now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOCAL_HOST, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((LOCAL_HOST, port))
        except OSError:
            return False
    return True


@dataclass(frozen=True)
class LocalPaths:
    """Where a local run keeps its files."""

    run_dir: Path

    @property
    def checkpoints(self) -> Path:
        return self.run_dir / "checkpoints"

    @property
    def trace(self) -> Path:
        return self.run_dir / "trace.jsonl"

    @property
    def manual_replicas(self) -> Path:
        """A pinned replica count, written by `crescendo local-scale` (kubectl scale's twin)."""
        return self.run_dir / "manual-replicas"

    @property
    def sessions(self) -> Path:
        """One line per `crescendo local` invocation that ran the job: {"start": unix seconds}."""
        return self.run_dir / "sessions.jsonl"

    def log(self, index: int) -> Path:
        return self.run_dir / f"replica-{index}.log"


def local_script(script: str) -> Path:
    """The user's script as a local agent runs it: relative to where `crescendo local` started."""
    return Path(script).absolute()


def local_command(job_name: str, spec: JobSpec, namespace: str) -> list[str]:
    if spec.script is not None:
        # Only the command line changes: the spec the trainers read (worker_env) keeps the
        # user's path, which is what they wrote and what the spec's pattern accepts.
        spec = spec.model_copy(update={"script": str(local_script(spec.script))})
    command = torchrun_command(job_name, spec, LOCAL_HOST, namespace=namespace)
    if command and command[0] == "torchrun":
        command = [sys.executable, "-m", "torch.distributed.run", *command[1:]]
    return command


def local_env(
    job_name: str, namespace: str, index: int, spec: JobSpec, paths: LocalPaths, metrics_port: int
) -> dict[str, str]:
    env = dict(os.environ)
    env.update(worker_env(job_name, namespace, index, spec))
    env[contract.ENV_METRICS_PORT] = str(metrics_port)
    env[contract.ENV_CHECKPOINT_DIR] = str(paths.checkpoints)
    env[contract.ENV_TRACE_FILE] = str(paths.trace)
    # Several agents share the host's cores: one intra-op thread each avoids oversubscription.
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def start_agent(
    job_name: str,
    namespace: str,
    index: int,
    spec: JobSpec,
    paths: LocalPaths,
    metrics_port: int,
) -> subprocess.Popen[bytes]:
    """Launch replica `index`; its output goes to the run directory's replica-<i>.log."""
    paths.run_dir.mkdir(parents=True, exist_ok=True)
    with paths.log(index).open("ab") as log:
        return subprocess.Popen(
            local_command(job_name, spec, namespace),
            env=local_env(job_name, namespace, index, spec, paths, metrics_port),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def stop_agent(process: subprocess.Popen[bytes], grace_seconds: float = 60.0) -> int:
    """SIGTERM the agent (it forwards it to its trainers, which checkpoint); SIGKILL whatever
    of its process tree outlives the grace period. Returns the agent's exit status."""
    tree = descendants(process)  # torchrun starts trainers in sessions of their own
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace_seconds)
    kill([*tree, *_alive(process)])
    return process.wait()


def _alive(process: subprocess.Popen[bytes]) -> list[psutil.Process]:
    """The agent itself while it still runs (not yet reaped), as a psutil handle."""
    if process.poll() is not None:
        return []
    try:
        return [psutil.Process(process.pid)]
    except psutil.NoSuchProcess:
        return []


def descendants(process: subprocess.Popen[bytes]) -> list[psutil.Process]:
    try:
        return list(psutil.Process(process.pid).children(recursive=True))
    except psutil.NoSuchProcess:
        return []


def kill(processes: list[psutil.Process]) -> None:
    for proc in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(processes, timeout=10)


def kill_tree(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the agent and its trainers at once (a pod that vanished)."""
    kill([*descendants(process), *_alive(process)])
    process.wait()
