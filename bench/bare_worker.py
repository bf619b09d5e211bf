"""The trivial torchrun worker bench/rescale.py measures the bare re-rendezvous with.

It joins the process group, then loops: one all-reduce (so a lost peer fails it, as in the
trainer), a short sleep standing in for compute, and a trace record per "step" in the same format
as the trainer (crescendo_spec.trace). No checkpoint, no model, no data: what is left of a
rescale is torchrun's own cost.
"""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from crescendo_spec.trace import TraceWriter


def main() -> None:
    dist.init_process_group("gloo", timeout=timedelta(seconds=30))
    rank, world = dist.get_rank(), dist.get_world_size()
    trace_file = os.environ.get("CRESCENDO_TRACE_FILE")
    trace = TraceWriter(Path(trace_file) if trace_file else None, rank == 0)
    step = 0
    while True:
        dist.all_reduce(torch.ones(1))
        step += 1
        trace.write("step", step=step, world=world)
        time.sleep(0.02)


if __name__ == "__main__":
    main()
