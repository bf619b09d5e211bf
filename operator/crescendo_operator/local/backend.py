"""The local `ReplicaBackend`: replica i is a torchrun agent process on this machine.

Create, delete and list behave like the Kubernetes backend's pods: a live agent is Running and
ready, an agent that exited 0 is Succeeded, any other exit is Failed, and a replica being
stopped is terminating. Replica 0 is started first and must be listening on the rendezvous port
before any other starts: with c10d the first agent to bind the port hosts the store, and the
controller never deletes replica 0, so the store lives as long as the job (on a cluster the
endpoint names worker-0's DNS name, which gives the same guarantee).
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from dataclasses import dataclass, field

from crescendo_spec.model import JobSpec

from crescendo_operator.local.agents import (
    LOCAL_HOST,
    LocalPaths,
    free_port,
    start_agent,
    stop_agent,
)
from crescendo_operator.scaling import Replica

STORE_WAIT_SECONDS = 60.0


class LocalBackendError(RuntimeError):
    """A replica could not be started (the message says why)."""


@dataclass
class _Agent:
    process: subprocess.Popen[bytes]
    metrics_port: int
    created: float
    stopping: asyncio.Task[int] | None = None


@dataclass
class LocalBackend:
    job_name: str
    namespace: str
    spec: JobSpec  # already mapped for this machine (free rendezvous port, local paths)
    paths: LocalPaths
    agents: dict[int, _Agent] = field(default_factory=dict)

    async def create_replica(self, index: int) -> None:
        if index in self.agents and self.agents[index].stopping is None:
            return  # already exists: success, as on the API server
        if index > 0:
            await self._wait_for_store()
        port = free_port()
        process = start_agent(self.job_name, self.namespace, index, self.spec, self.paths, port)
        self.agents[index] = _Agent(process, port, time.time())

    async def delete_replica(self, index: int) -> None:
        agent = self.agents.get(index)
        if agent is None:
            return  # not found: success
        if agent.stopping is None:
            agent.stopping = asyncio.create_task(asyncio.to_thread(stop_agent, agent.process))
        await agent.stopping
        self.agents.pop(index, None)

    async def list_replicas(self) -> list[Replica]:
        return [self._replica(i, a) for i, a in sorted(self.agents.items())]

    def _replica(self, index: int, agent: _Agent) -> Replica:
        code = agent.process.poll()
        phase = "Running" if code is None else "Succeeded" if code == 0 else "Failed"
        return Replica(
            index=index,
            phase=phase,
            ready=code is None,
            scheduled=True,
            created=agent.created,
            started=agent.created,  # the agent process is the running container
            terminating=agent.stopping is not None,
            endpoint=f"{LOCAL_HOST}:{agent.metrics_port}",
        )

    async def _wait_for_store(self) -> None:
        deadline = time.monotonic() + STORE_WAIT_SECONDS
        port = self.spec.rendezvous.port
        while not _listening(port):
            first = self.agents.get(0)
            if first is None or first.process.poll() is not None:
                raise LocalBackendError(
                    f"replica 0 is not running, so replica >0 cannot join its rendezvous store "
                    f"on port {port}; see {self.paths.log(0)}"
                )
            if time.monotonic() > deadline:
                raise LocalBackendError(
                    f"replica 0 did not open the rendezvous port {port} within "
                    f"{STORE_WAIT_SECONDS:.0f} s; see {self.paths.log(0)}"
                )
            await asyncio.sleep(0.1)

    async def close(self) -> None:
        """Stop every replica at once (SIGTERM: the trainers agree on a last step, rank 0
        checkpoints it); one by one would make the survivors rescale on the way down."""
        await asyncio.gather(*(self.delete_replica(i) for i in list(self.agents)))


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((LOCAL_HOST, port)) == 0
