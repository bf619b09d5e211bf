"""The process group: joining it, leaving it, and telling a lost peer from a bug.

torchrun sets MASTER_ADDR/MASTER_PORT/RANK/WORLD_SIZE for every (re)started worker; the group
is created with the job's collective timeout so a silently lost peer fails a collective in
`rendezvous.collectiveTimeoutSeconds` rather than hanging (NCCL's default is 30 min). gloo on
CPU, NCCL when CUDA is available.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from datetime import timedelta

import torch
import torch.distributed as dist

from crescendo_trainer.environment import Environment

log = logging.getLogger("crescendo_trainer")


def device_for(env: Environment) -> torch.device:
    if torch.cuda.is_available():
        torch.cuda.set_device(env.local_rank)
        return torch.device("cuda", env.local_rank)
    return torch.device("cpu")


def join(env: Environment, device: torch.device, timeout_seconds: int) -> None:
    """Create the default process group when launched distributed (no-op for one process)."""
    if not env.distributed or dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=timedelta(seconds=timeout_seconds))
    log.info("process group: backend %s, world %d, collective timeout %d s",
             backend, env.world_size, timeout_seconds)


def active() -> bool:
    return dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """The sum over ranks of a small CPU tensor (NCCL reduces only CUDA tensors: the values go
    to this rank's GPU and back, a few bytes)."""
    if not active():
        return values
    if dist.get_backend() == "nccl":
        on_gpu = values.to(torch.device("cuda", torch.cuda.current_device()))
        dist.all_reduce(on_gpu, op=dist.ReduceOp.SUM)
        return on_gpu.cpu()
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def is_peer_lost(exc: BaseException) -> bool:
    """Whether `exc` is a collective failing because a peer went away (not a bug of ours)."""
    if isinstance(exc, dist.DistError):
        return True
    text = str(exc).lower()
    markers = ("connection closed", "connection reset", "broken pipe", "timed out", "gloo")
    in_group = dist.is_available() and dist.is_initialized()
    return isinstance(exc, RuntimeError) and in_group and any(m in text for m in markers)


@contextlib.contextmanager
def no_sync_unless(last: bool, module: torch.nn.Module) -> Iterator[None]:
    """DDP's no_sync() on every micro-step but the last (gradient accumulation)."""
    if last or not isinstance(module, torch.nn.parallel.DistributedDataParallel):
        yield
        return
    with module.no_sync():
        yield
