"""ConAdv: adversarial examples made concurrently from stale weights (Liu et al., arXiv 2106.00221).

Owns the pipeline that makes the adversarial copy of the batch of step t+τ with the weights of
step t while the weight gradient of step t runs, so the example used at step t was made with
w_{t−τ}. Plain adversarial training needs ∇ₓ at w_t before ∇_w at the adversarial input (two
sequential passes); with τ ≥ 1 the two passes overlap and the step takes about as long as the
weight pass alone, on hardware that has room for the second pass.

Staleness is implemented from the paper's description (the authors' code's handling is partly
inert): the worker holds its own copy of the weights, refreshed once per step with w_t, and every
adversarial batch records the version (optimizer steps) of the weights that made it; before
step τ, and right after a restart, the newest weights are the only ones there are, so the version
is max(t − τ, first step). τ = 0 degenerates to sequential adversarial training, bit for bit: the
copy holds w_t, and the attack's random draws come from a generator seeded by (seed, step), not
from whichever thread runs it.

DECIDE, the concurrency:
- CPU: one worker thread with its own copy of the model. PyTorch releases the GIL inside its
  kernels, so the attack's forward/backward overlaps the weight pass on another core. A thread
  (not a process) because the refresh is then a memory copy and the inputs need no pickling.
- GPU: a second CUDA stream; the attack's kernels are queued on it and the weight pass's on the
  default stream; events order the refresh, the attack and the use of its result.
- `inline`: no concurrency at all, the reference the measurements are taken against.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from crescendo_trainer.adversarial.pgd import pgd, random_wrong_labels
from crescendo_trainer.hessian import unwrap

# attack(model, inputs, labels, generator) -> adversarial inputs (detached)
AttackFn = Callable[[nn.Module, Tensor, Tensor, torch.Generator], Tensor]
Backend = Literal["inline", "thread", "cuda"]


def conadv_attack(
    *,
    epsilon: float,
    step_size: float | None,
    steps: int,
    random_start: bool,
    targeted: bool,
    num_classes: int,
) -> AttackFn:
    """ConAdv's attack, parameterised: PGD, optionally toward a random wrong label."""

    def attack(model: nn.Module, inputs: Tensor, labels: Tensor, gen: torch.Generator) -> Tensor:
        target = random_wrong_labels(labels, num_classes, gen) if targeted else None
        return pgd(
            model,
            inputs,
            labels,
            epsilon=epsilon,
            step_size=step_size,
            steps=steps,
            random_start=random_start,
            target=target,
            generator=gen,
        )

    return attack


@dataclass(frozen=True)
class AdversarialBatch:
    step: int  # the optimizer step whose batch this is the adversarial copy of
    inputs: Tensor
    labels: Tensor
    weight_version: int  # optimizer steps completed by the weights that made it


class ConAdv:
    """The adversarial-example pipeline with staleness τ.

    The trainer, at the start of step t (its weights are w_t, t steps done), calls
    `begin_step(t, future)` with `future[i]` the batch of step t+i for i = 0..τ, then
    `take(t)` for the adversarial copy of its own batch, then computes the weight gradient
    on ½·mean L(clean) + ½·mean L(adversarial) and steps the optimizer.
    """

    def __init__(
        self,
        model: nn.Module,
        attack: AttackFn,
        staleness: int,
        *,
        seed: int = 0,
        backend: Backend | None = None,
    ) -> None:
        if staleness < 0:
            raise ValueError(f"adversarial.staleness: τ must be >= 0, got {staleness}")
        self.model = unwrap(model)
        self.attack = attack
        self.staleness = staleness
        self.seed = seed
        device = next(self.model.parameters()).device
        self.backend: Backend = backend or ("cuda" if device.type == "cuda" else "thread")
        # The worker's own weights: the attack never reads the live parameters mid-update.
        self.replica = copy.deepcopy(self.model)
        for p in self.replica.parameters():
            p.requires_grad_(False)
        self.version = -1  # weights in the replica; -1: not yet refreshed
        self._pending: dict[int, Future[AdversarialBatch] | AdversarialBatch] = {}
        self._pool = ThreadPoolExecutor(1, "conadv") if self.backend == "thread" else None
        self._stream = (
            torch.cuda.Stream(device)  # type: ignore[no-untyped-call]
            if self.backend == "cuda"
            else None
        )
        self._events: dict[int, torch.cuda.Event] = {}
        self.history: list[tuple[int, int]] = []  # (step, weight version) of every batch taken

    # -- the step protocol ------------------------------------------------------------------
    def begin_step(self, step: int, future: Sequence[tuple[Tensor, Tensor]]) -> None:
        """Refresh the replica with w_step; start the batches of steps step..step+τ not started."""
        if len(future) < self.staleness + 1:
            raise ValueError(
                f"ConAdv needs the batches of steps {step}..{step + self.staleness} "
                f"(τ + 1 = {self.staleness + 1}), got {len(future)}"
            )
        self.begin_step_on_demand(step, lambda wanted: future[wanted - step])

    def begin_step_on_demand(
        self, step: int, batch_of: Callable[[int], tuple[Tensor, Tensor]]
    ) -> None:
        """`begin_step`, asking `batch_of(s)` only for the steps s in step..step+τ not started
        yet: in steady state one batch per step, so a caller need not gather τ of them again."""
        self._refresh(step)
        for wanted in range(step, step + self.staleness + 1):
            if wanted not in self._pending:
                inputs, labels = batch_of(wanted)
                self._submit(wanted, inputs, labels)

    def take(self, step: int) -> AdversarialBatch:
        """The adversarial copy of the batch of `step` (waits for it if it is still being made)."""
        if step not in self._pending:
            raise KeyError(f"no adversarial batch was started for step {step}")
        item = self._pending.pop(step)
        result = item.result() if isinstance(item, Future) else item
        if self._stream is not None:
            torch.cuda.current_stream().wait_event(self._events.pop(step))
            result.inputs.record_stream(torch.cuda.current_stream())
        self.history.append((step, result.weight_version))
        return result

    def discard(self) -> None:
        """Drop the batches started so far: the batch size or layout changed, so the steps
        ahead take other samples. The next `begin_step` starts them again from its weights."""
        self._drain()
        self._pending.clear()
        self._events.clear()

    def close(self) -> None:
        """Finish in-flight work and stop the worker."""
        self._drain()
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    # -- internals ----------------------------------------------------------------------------
    def _drain(self) -> None:
        for step, item in list(self._pending.items()):
            if isinstance(item, Future):
                self._pending[step] = item.result()

    @torch.no_grad()
    def _refresh(self, version: int) -> None:
        if version == self.version:
            return
        # The replica may be in use by the job started last step: let it finish with the old
        # weights (it ran concurrently with last step's weight pass) before overwriting them.
        self._drain()
        live = dict(self.model.state_dict())
        if self._stream is not None:
            self._stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(self._stream):
                for name, tensor in self.replica.state_dict().items():
                    tensor.copy_(live[name], non_blocking=True)
        else:
            for name, tensor in self.replica.state_dict().items():
                tensor.copy_(live[name])
        self.version = version

    def _generator(self, step: int, device: torch.device) -> torch.Generator:
        # Seeded by (seed, step): the same draw whichever thread or stream makes the batch.
        return torch.Generator(device).manual_seed(self.seed * 1_000_003 + step)

    def _make(self, step: int, inputs: Tensor, labels: Tensor, version: int) -> AdversarialBatch:
        adv = self.attack(self.replica, inputs, labels, self._generator(step, inputs.device))
        return AdversarialBatch(step, adv, labels, version)

    def _submit(self, step: int, inputs: Tensor, labels: Tensor) -> None:
        version = self.version
        if self._pool is not None:
            self._pending[step] = self._pool.submit(self._make, step, inputs, labels, version)
        elif self._stream is not None:
            self._stream.wait_stream(torch.cuda.current_stream())  # inputs are ready
            with torch.cuda.stream(self._stream):
                self._pending[step] = self._make(step, inputs, labels, version)
                event = torch.cuda.Event()  # type: ignore[no-untyped-call]
                event.record(self._stream)
            self._events[step] = event
        else:
            self._pending[step] = self._make(step, inputs, labels, version)


def adversarial_loss(
    model: nn.Module,
    clean: tuple[Tensor, Tensor],
    adversarial: AdversarialBatch,
    loss_fn: Callable[[Tensor, Tensor], Tensor] = nn.functional.cross_entropy,
) -> Tensor:
    """ConAdv's weight objective: ½·mean L(clean) + ½·mean L(adversarial copy)."""
    inputs, labels = clean
    return 0.5 * loss_fn(model(inputs), labels) + 0.5 * loss_fn(
        model(adversarial.inputs), adversarial.labels
    )
