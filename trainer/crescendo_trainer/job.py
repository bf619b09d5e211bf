"""The job as a training script sees it: the conductor of an elastic loop (step, decide, checkpoint,
stop), for the built-in trainer and a user's own script alike.

    def main(job: Job) -> None:
        model = Net().to(job.device)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        job.track(model=model, optimizer=optimizer)        # the checkpoint's components
        ddp = job.distribute(model)                         # DDP (and the noise-scale hook)
        job.loader(MyDataset(), num_workers=2)              # any map-style Dataset
        while job.running:                                  # restores first; False when done
            for x, y in job.micro_batches():                # this rank's share of B
                job.backward(cross_entropy(ddp(x), y))      # a micro-batch's mean loss
            job.step(optimizer)                             # LR rule, step, decide, checkpoint

    launch(main)                                            # launch.py: env, exit codes

What the job owns: the global batch B (the policy decides it after every step, the same on every
rank), its layout over the world (batching.py: this rank's micro-batches and accumulation, under
DDP's no_sync() but for the last), the LR rule (a multiplier on the optimizer's own LR, applied
only around optimizer.step(), so a user's scheduler keeps its own values), the position in the
data by global sample index, the checkpoint of every tracked component (state.py; at every
decision, every `checkpoint.everySteps`, on a stop and when a peer is lost), and the stop: one
all-reduce per step agrees on the loss and on whether any rank was asked to stop. Every fact goes
to one sink (telemetry.py).
"""

from __future__ import annotations

import contextlib
import enum
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from crescendo_spec.model import JobSpec
from crescendo_spec.trace import TraceWriter
from torch import Tensor, nn
from torch.utils.data import Dataset

from crescendo_trainer import checkpoint, distributed
from crescendo_trainer.batching import Layout, loss_scale, step_layout
from crescendo_trainer.environment import Environment
from crescendo_trainer.exporter import TrainerMetrics
from crescendo_trainer.hessian import LossFn
from crescendo_trainer.high_water import HighWaterWriter
from crescendo_trainer.loader import ElasticLoader, to_device
from crescendo_trainer.lr import LrRule, scaled_lr
from crescendo_trainer.measurements import CurvatureProbe, Measurements
from crescendo_trainer.policies import Decision, Signals, build_policy
from crescendo_trainer.policies.base import HESSIAN_EIGENVALUE
from crescendo_trainer.progress import Progress
from crescendo_trainer.restore import restore
from crescendo_trainer.sampler import ElasticSampler
from crescendo_trainer.signals import StopFlag
from crescendo_trainer.state import RngState, StateRegistry
from crescendo_trainer.telemetry import Quality, StepFacts, Telemetry

log = logging.getLogger("crescendo_trainer")


class Outcome(enum.Enum):
    DONE = "done"  # budget reached
    STOPPED = "stopped"  # a signal (this rank's or a peer's): checkpointed, restartable
    PEER_LOST = "peer_lost"  # a collective failed: checkpointed by the survivors, restart needed


@dataclass(frozen=True)
class MicroBatch:
    """The micro-batch being trained on: its place in the step and its size on this rank."""

    index: int
    last: bool  # the one whose backward all-reduces
    size: int


@dataclass(frozen=True)
class Pending:
    why: str
    publish: bool  # a decision changed B: export it once saved


@dataclass(frozen=True)
class StepReport:
    step: int  # optimizer steps completed
    loss: float  # mean over the global batch, agreed by all ranks
    global_batch: int  # B from the next step on
    decision: Decision
    epoch_end: bool


class Job:
    def __init__(
        self, spec: JobSpec, env: Environment, metrics: TrainerMetrics, stop: StopFlag
    ) -> None:
        self.spec, self.env, self.stop = spec, env, stop
        self.device = distributed.device_for(env)
        self.world = env.world_size
        self.checkpoint_dir = env.checkpoint_dir or Path(spec.checkpoint.dir)
        self.telemetry = Telemetry(metrics, TraceWriter(env.trace_file, env.is_rank0),
                                   rank0=env.is_rank0, log_every=spec.log_every_steps)
        self.tokens_per_sample = spec.language.seq_len if spec.is_language_model else 1
        self.policy = build_policy(
            spec.batch, epochs=spec.epochs, adversarial=spec.adversarial,
            tokens_per_sample=self.tokens_per_sample, language_model=spec.is_language_model,
            replicas=spec.replicas, procs_per_replica=spec.procs_per_replica,
            scaling=spec.scaling,
        )
        self.lr_rule = LrRule.from_spec(spec.learning_rate, spec.batch.initial)
        self.progress = Progress(global_batch=spec.batch.initial, world_size=self.world)
        self.measurements = Measurements(self.policy, spec.batch)
        self.state = StateRegistry()
        for name, component in (("progress", self.progress), ("policy", self.policy),
                                ("noise", self.measurements), ("rng", RngState())):
            self.state.register(name, component, reserved_ok=True)
        self.module: nn.Module | None = None  # the tracked model, unwrapped
        self.model: nn.Module | None = None  # what the forward runs: DDP under several ranks
        self.sampler: ElasticSampler | None = None
        self.train_loader: ElasticLoader | None = None
        self.evaluator: Callable[[], Quality] | None = None
        self.eval_every_steps: int | None = None
        self.micro = MicroBatch(0, True, 0)
        self.outcome: Outcome | None = None
        self.started = False
        self._pending: Pending | None = None  # the checkpoint the last step calls for
        self._stopping = False
        self.resumed_from: Progress | None = None
        self._loss_sum = torch.zeros((), dtype=torch.float64)
        self._step_started = 0.0
        torch.manual_seed(spec.seed)  # the same initial weights on every rank

    # --- what a script reads --------------------------------------------------------------------
    @property
    def rank(self) -> int:
        return self.env.rank

    @property
    def global_batch(self) -> int:
        return self.progress.global_batch

    @property
    def layout(self) -> Layout:
        """B laid out over the world: this rank's micro-batches and the accumulation. Measuring
        the noise scale on one worker needs two micro-batches a step (noise.MicroBatchNorms)."""
        return step_layout(self.progress.global_batch, self.world, self.spec.batch.per_gpu_max,
                           pairs=self.measurements.splits_steps)

    @property
    def loss_scale(self) -> float:
        """Multiplier of a micro-batch's SUMMED loss so that DDP's mean is the mean over B."""
        return loss_scale(self.progress.global_batch, self.world)

    def autocast(self) -> torch.autocast:
        """bf16 autocast on a GPU (weights and gradients stay fp32); a no-op on the CPU."""
        on_gpu = self.device.type == "cuda"
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=on_gpu)

    # --- set-up ---------------------------------------------------------------------------------
    def track(self, **components: Any) -> None:
        """Checkpoint these (anything with state_dict/load_state_dict) under these names. The
        first nn.Module tracked is the model the job measures and wraps."""
        for name, component in components.items():
            self.state.register(name, component)
            if self.module is None and isinstance(component, nn.Module):
                self.module = component

    def distribute(self, model: nn.Module) -> nn.Module:
        """The model to run forward: `model` on the job's device, under DDP when distributed."""
        model.to(self.device)
        self.module = self.module or model
        self.model = model
        if distributed.active():
            ids = [self.device.index] if self.device.type == "cuda" else None
            ddp = nn.parallel.DistributedDataParallel(model, device_ids=ids)
            self.measurements.attach(ddp)
            self.model = ddp
        return self.model

    def loader(self, dataset: Dataset[Any], **loader_kwargs: Any) -> ElasticLoader:
        """The training data: `DataLoader` options as usual (collate_fn, num_workers,
        pin_memory — on by default on a GPU), indices chosen by the job."""
        size = len(dataset)  # type: ignore[arg-type]
        if size < self.spec.batch.initial:
            raise ValueError(
                f"the data set has {size} samples, fewer than batch.initial "
                f"({self.spec.batch.initial}): one step would not fit in an epoch"
            )
        loader_kwargs.setdefault("pin_memory", self.device.type == "cuda")
        self.sampler = ElasticSampler(size, self.spec.seed)
        self.train_loader = ElasticLoader(dataset, self.sampler, self.rank, **loader_kwargs)
        return self.train_loader

    def evaluate_with(self, fn: Callable[[], Quality], every_steps: int | None = None) -> None:
        """`fn()` (called on every rank) gives the quality: {"accuracy": …}, or {"val_loss": …,
        "perplexity": …}; at every epoch end, or every `every_steps`, and when the job ends."""
        self.evaluator, self.eval_every_steps = fn, every_steps

    def measure_curvature_with(
        self, loss_fn: LossFn, inputs: Tensor, targets: Tensor, model: nn.Module | None = None
    ) -> None:
        """The loss closure ABS/ABSA measure the Hessian on: `loss_fn(model(inputs), targets)`
        on one fixed batch, the same on every rank (the unwrapped model, in eval mode)."""
        module = model or self.module
        if module is None:
            raise ValueError("track or distribute the model before measure_curvature_with")
        self.measurements.probe = CurvatureProbe(
            module, loss_fn, inputs.to(self.device), targets.to(self.device)
        )

    # --- the loop -------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """Whether to do another step: starts the job at the first call (restore), ends it at the
        budget (final evaluation and checkpoint) or after a stop."""
        if self.outcome is not None:
            return False
        if not self.started:
            self._start()
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self.save(pending.why)
            if pending.publish:  # checkpoint first, then ask for the replicas
                self.telemetry.batch(self.progress.global_batch, self.world)
        if self._stopping:
            self.telemetry.stopped(self.progress.step, self.stop.signal_name)
            self.outcome = Outcome.STOPPED
            return False
        p, sampler = self.progress, self._sampler()
        if not sampler.has_room(p.position, p.global_batch):
            p.epoch, p.position = p.epoch + 1, 0
        if self._budget_reached():
            self._finish()
            return False
        return True

    def micro_batches(self) -> Iterator[Any]:
        """This rank's micro-batches of the step, on the job's device; the backward of every one
        but the last runs under DDP's no_sync() (gradient accumulation)."""
        if self.train_loader is None:
            raise ValueError("give the job its training data first: job.loader(dataset)")
        p, plan = self.progress, self.layout
        self._step_started = time.perf_counter()
        self._loss_sum = torch.zeros((), dtype=torch.float64)
        batches = self.train_loader.step_batches(p.epoch, p.position, plan)
        sizes = plan.micro_sizes[self.rank]
        for i, batch in enumerate(batches):
            self.micro = MicroBatch(i, i == len(batches) - 1, sizes[i])
            with self._sync_unless_last():
                yield to_device(batch, self.device)
            if self.module is not None and self.measurements.splits_steps:
                self.measurements.after_micro(list(self.module.parameters()), sizes[i],
                                              p.global_batch)

    def backward(self, loss: Tensor) -> None:
        """Back-propagate a micro-batch's MEAN loss, weighted so the step's gradient is the mean
        over the global batch whatever the layout."""
        n = self.micro.size
        (loss * (n * self.loss_scale)).backward()  # type: ignore[no-untyped-call]
        self.add_loss(loss.detach() * n)

    def add_loss(self, summed: Tensor) -> None:
        """Count a micro-batch's summed loss for the step's reported loss (for a script that
        runs its own backward with `loss_scale`)."""
        self._loss_sum += summed.detach().double().cpu()

    def step(self, *optimizers: torch.optim.Optimizer) -> StepReport:
        """End the step: the LR rule on each optimizer, their step, then agree, decide, evaluate
        and checkpoint. Every rank calls it after the same micro-batches."""
        if self.outcome is not None or not self.started:
            raise RuntimeError("job.step() outside `while job.running:`")
        p, plan = self.progress, self.layout
        if self.module is not None and self.measurements.wants_noise:
            params = list(self.module.parameters())
            self.measurements.observe_gradients(params, plan.share(self.rank), p.global_batch)
        factor = self.lr_rule.factor(p.step, p.epoch, p.global_batch)
        lr = optimizers[0].param_groups[0]["lr"] * factor if optimizers else 0.0
        for optimizer in optimizers:
            with scaled_lr(optimizer, factor):
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        p.step += 1
        p.position += p.global_batch
        p.samples_seen += p.global_batch
        p.world_size = self.world
        p.last_step_time = time.time()
        stop = torch.tensor(float(self.stop.raised), dtype=torch.float64)
        # The step's time joins the all-reduce: a policy that models throughput decides on the
        # ranks' mean, the same number everywhere (each rank's own clock would differ).
        took = torch.tensor(time.perf_counter() - self._step_started, dtype=torch.float64)
        stats = distributed.all_reduce_sum(torch.stack([self._loss_sum, stop, took]))
        loss = float(stats[0]) / p.global_batch
        seconds = float(stats[2]) / self.world
        self.telemetry.step(p, StepFacts(loss, seconds, plan.accumulation, lr), self.world)
        self._pause_after_restart()
        epoch_end = not self._sampler().has_room(p.position, p.global_batch)
        decision = self._decide(loss, epoch_end, seconds, plan)
        if self._evaluation_due(epoch_end):
            self.evaluate()
        # The checkpoint is taken when the script comes back to `running`: what it does after
        # step() (a scheduler's step, its own counters) belongs to the step it saves.
        self._stopping = bool(stats[1] > 0)
        if self._stopping:
            self._pending = Pending("stop requested", publish=False)
        elif decision.changed:
            self._pending = Pending(decision.reason, publish=True)
        elif p.step % self.spec.checkpoint.every_steps == 0:
            self._pending = Pending("every steps", publish=False)
        return StepReport(p.step, loss, p.global_batch, decision, epoch_end)

    def evaluate(self) -> Quality:
        """Run the evaluator now (every rank) and report its quality."""
        if self.evaluator is None:
            return {}
        p = self.progress
        p.quality, p.evaluated_step = dict(self.evaluator()), p.step
        self.telemetry.evaluation(p, p.quality)
        return p.quality

    def save(self, why: str, survivor: bool = False) -> None:
        """Checkpoint every component (global rank 0, or a survivor when a peer was lost)."""
        if not (self.env.is_rank0 or survivor):
            return
        keep = self.spec.checkpoint.keep
        path = checkpoint.save(self.checkpoint_dir, self.progress.step,
                               self.state.state_dict(), keep)
        self.telemetry.checkpoint(self.progress.step, path.name, why)

    def peer_lost(self, exc: BaseException) -> None:
        """A collective failed because a peer went: the first process of every surviving node
        saves (rank 0 may be the one that left; all hold the same state, and the atomic rename
        makes the writes race-free), so the restart at the new world size loses no step."""
        log.warning("a peer left (%s): saving step %d", exc, self.progress.step)
        self._pending = None
        self.telemetry.unreported_step(self.progress, self.world)
        if self.started:
            self.save("peer lost", survivor=self.env.local_rank == 0)
        self.outcome = Outcome.PEER_LOST

    def close(self) -> None:
        if self.train_loader is not None:
            self.train_loader.close()
        self.telemetry.close()

    # --- inside ---------------------------------------------------------------------------------
    def _sampler(self) -> ElasticSampler:
        if self.sampler is None:
            raise ValueError("give the job its training data first: job.loader(dataset)")
        return self.sampler

    def _sync_unless_last(self) -> contextlib.AbstractContextManager[None]:
        if self.model is None:
            return contextlib.nullcontext()
        return distributed.no_sync_unless(self.micro.last, self.model)

    def _start(self) -> None:
        self.telemetry.phase("set-up")
        self._restore()
        self.telemetry.phase("checkpoint")
        self.telemetry.batch(self.progress.global_batch, self.world)
        self.started = True

    def _restore(self) -> None:
        """The newest good checkpoint into every component (restore.py); rank 0 then keeps the
        high-water record, starting with the resumed step as counted."""
        p = self.progress
        restart = restore(self.state, p, self.checkpoint_dir)
        self.telemetry.lost_steps(restart.lost.total)
        if self.env.is_rank0:
            self.telemetry.keep_high_water(HighWaterWriter(self.checkpoint_dir), p)
        if restart.checkpoint is None:
            log.info("no checkpoint in %s: starting at step 0; %d steps lost (redone), %d in all",
                     self.checkpoint_dir, restart.lost.this_restart, restart.lost.total)
            return
        self.resumed_from = replace(p)
        if self.rank > 0:  # distinct streams per rank, reproducible from (seed, step)
            torch.manual_seed(self.spec.seed * 7919 + p.step * 31 + self.rank)
        self.telemetry.checkpoint_seen(restart.checkpoint.stat().st_mtime)
        self.telemetry.resumed(p, self.world, restart.checkpoint.name, restart.lost.this_restart)

    def _pause_after_restart(self) -> None:
        if self.resumed_from is not None:
            before, p = self.resumed_from, self.progress
            self.telemetry.pause(p.step, p.last_step_time - before.last_step_time,
                                 before.world_size, self.world)
            self.resumed_from = None

    def _decide(self, loss: float, epoch_end: bool, seconds: float, plan: Layout) -> Decision:
        p = self.progress
        measured = self.measurements.take(p.step, p.epoch, epoch_end)
        traced = HESSIAN_EIGENVALUE in measured or p.step % self.spec.log_every_steps == 0
        self.telemetry.measured(p.step, measured, traced=traced)
        signals = Signals(p.step, p.epoch, epoch_end, p.global_batch, loss, measured,
                          samples=p.samples_seen, world_size=self.world, step_seconds=seconds,
                          accumulation=plan.accumulation, micro_batch=plan.max_micro)
        decision = self.policy.decide(signals)
        self.telemetry.decision(p.step, p.global_batch, decision)
        if decision.changed:
            p.global_batch = decision.global_batch
        return decision

    def _evaluation_due(self, epoch_end: bool) -> bool:
        if self.eval_every_steps is None:
            return epoch_end
        return self.progress.step % self.eval_every_steps == 0

    def _budget_reached(self) -> bool:
        p, spec = self.progress, self.spec
        if spec.max_steps is not None and p.step >= spec.max_steps:
            return True
        if spec.max_samples is not None and p.samples_seen >= spec.max_samples:
            return True
        return spec.epochs is not None and p.epoch >= spec.epochs

    def _finish(self) -> None:
        p = self.progress
        if p.evaluated_step != p.step:
            self.evaluate()
        self.save("budget reached")
        self.telemetry.done(p.step, p.quality)
        self.outcome = Outcome.DONE
