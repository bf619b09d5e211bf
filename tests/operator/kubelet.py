"""A test-only kubelet: runs the Pods the operator creates on the emulator as local processes.

Each Pod becomes the process its own container command and env describe, with what a node and
its network would provide mapped to this machine:
- `torchrun` is this interpreter's `-m torch.distributed.run`;
- the rendezvous host (`<job>-worker-0.<job>.<ns>.svc`) is 127.0.0.1, and pod 0 is started, and
  listening on the rendezvous port, before any other (on a cluster only pod 0 has that DNS name);
- pod i gets its own IP 127.0.0.<10+i>; a forwarder on that IP's metrics port stands in for the
  pod network in front of the trainer (whose /metrics listens on a free local port);
- checkpoints and the run trace go to the test's directory (the shared volume).
Phases are reported back through the Pod's status: Running and Ready once started, Succeeded or
Failed with the exit code when the process ends. A deleted Pod's process gets SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crescendo_operator.local.agents import free_port, kill_tree, stop_agent
from crescendo_spec import contract

from tests.operator.conftest import PODS, Cluster


@dataclass
class _Running:
    process: subprocess.Popen[bytes]
    forwarder: asyncio.Server
    reported: str = "Running"


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


async def _forward_to(port: int, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
    try:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        writer.close()  # the trainer is not listening (yet): like a refused connection
        return
    await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))


class Kubelet:
    def __init__(self, cluster: Cluster, job: str, run_dir: Path) -> None:
        self.cluster, self.job, self.run_dir = cluster, job, run_dir
        self.running: dict[str, _Running] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    def check(self) -> None:
        """Raise what stopped the kubelet's loop, if it stopped."""
        if self._task is not None and self._task.done():
            self._task.result()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for name in list(self.running):
            await self._kill(name)

    async def _loop(self) -> None:
        while True:
            pods = await self.cluster.pods(self.job)
            for name in list(self.running):
                if name not in pods or pods[name]["metadata"].get("deletionTimestamp"):
                    await self._terminate(name)
            for name, pod in sorted(pods.items(), key=lambda item: _index(item[1])):
                if name not in self.running and pod.get("status", {}).get("phase") in (
                    None, "Pending"
                ):
                    await self._run(pod)
            for name, running in self.running.items():
                code = running.process.poll()
                if code is not None and running.reported == "Running":
                    running.reported = "Succeeded" if code == 0 else "Failed"
                    await self._report(name, running.reported, code)
            await asyncio.sleep(0.2)

    async def _run(self, pod: dict[str, Any]) -> None:
        index, name = _index(pod), pod["metadata"]["name"]
        container = pod["spec"]["containers"][0]
        env = {e["name"]: e["value"] for e in container.get("env", [])}
        rdzv_port = next(p["containerPort"] for p in container["ports"]
                         if p["name"] == "rendezvous")
        if index > 0 and not await _listening(rdzv_port):
            return  # pod 0 must host the store first; try again next tick
        job = pod["metadata"]["labels"][contract.POD_LABEL_JOB]
        command = [_map(arg, job) for arg in container["command"]]
        if command[0] == "torchrun":
            command = [sys.executable, "-m", "torch.distributed.run", *command[1:]]
        trainer_port = free_port()
        env.update({
            contract.ENV_METRICS_PORT: str(trainer_port),
            contract.ENV_CHECKPOINT_DIR: str(self.run_dir / "checkpoints"),
            contract.ENV_TRACE_FILE: str(self.run_dir / "trace.jsonl"),
            "OMP_NUM_THREADS": "1",
        })
        pod_ip = f"127.0.0.{10 + index}"
        metrics_port = next(p["containerPort"] for p in container["ports"]
                            if p["name"] == "metrics")
        forwarder = await asyncio.start_server(
            lambda r, w: _forward_to(trainer_port, r, w), pod_ip, metrics_port
        )
        log = (self.run_dir / f"{name}.log").open("ab")
        process = subprocess.Popen(command, env={**os.environ, **env}, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        self.running[name] = _Running(process, forwarder)
        await self._report(name, "Running", None, pod_ip)

    async def _report(self, name: str, phase: str, code: int | None,
                      pod_ip: str | None = None) -> None:
        status: dict[str, Any] = {
            "phase": phase,
            "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Ready", "status": "True" if phase == "Running" else "False"},
            ],
        }
        if pod_ip:
            status["podIP"] = pod_ip
        if code is not None:
            status["containerStatuses"] = [{"name": "trainer", "restartCount": 0,
                                            "state": {"terminated": {"exitCode": code}}}]
        response = await self.cluster.http.patch(
            f"{PODS}/{name}/status", json={"status": status},
            headers={"Content-Type": "application/merge-patch+json"},
        )
        if response.status_code != 404:  # deleted meanwhile: nothing to report to
            response.raise_for_status()

    async def _terminate(self, name: str) -> None:
        running = self.running.pop(name)
        running.forwarder.close()
        await asyncio.to_thread(stop_agent, running.process)

    async def _kill(self, name: str) -> None:
        running = self.running.pop(name)
        running.forwarder.close()
        await asyncio.to_thread(kill_tree, running.process)


def _index(pod: dict[str, Any]) -> int:
    return int(pod["metadata"]["labels"][contract.POD_LABEL_REPLICA])


def _map(arg: str, job: str) -> str:
    """The rendezvous endpoint's cluster DNS name → this machine."""
    return arg.replace(f"{job}-worker-0.{job}.default.svc", "127.0.0.1")


async def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.setblocking(False)
        try:
            await asyncio.wait_for(
                asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port)), 0.5
            )
        except (OSError, TimeoutError):
            return False
    return True
