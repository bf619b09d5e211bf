"""The elastic training loop: one optimizer step at a time, at whatever world size torchrun gave.

Per step: lay the global batch B out over the world (batching.py), take this rank's samples by
global index (sampler.py), accumulate micro-batches under no_sync(), step, then one scalar
all-reduce that carries the loss and the stop flag, so every rank knows the same loss and stops
after the same step. Then the policy decides the next B (identical on every rank); a change is
applied at once through accumulation, checkpointed, and exported as the desired batch, which the
operator turns into replicas. On a stop (SIGTERM) rank 0 checkpoints the last completed step;
when a collective fails because a peer left, every node's first process does the same before
exiting (rank 0 may be the one that left), so the restart at the new world size loses no step.
With ConAdv the adversarial copies of the coming steps' batches are made from stale weights while
the step runs (adversarial/feed.py). A process killed between checkpoints does lose steps:
rank 0 records every completed step in the high-water record (high_water.py), and a restart
counts the steps beyond its checkpoint (lost_steps.py) into the crescendo_trainer_lost_steps_total
counter.
"""

from __future__ import annotations

import enum
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from crescendo_spec.model import JobSpec
from crescendo_spec.trace import TraceWriter
from torch import nn

from crescendo_trainer import checkpoint, distributed, high_water
from crescendo_trainer.adversarial.feed import ConAdvFeed, conadv_backward
from crescendo_trainer.adversarial.training import AdversarialTraining
from crescendo_trainer.batching import layout, loss_scale
from crescendo_trainer.datasets import TensorDataset, load_dataset
from crescendo_trainer.environment import Environment
from crescendo_trainer.exporter import TrainerMetrics
from crescendo_trainer.high_water import HighWaterWriter
from crescendo_trainer.lost_steps import LostSteps, count_lost_steps
from crescendo_trainer.lr import LrRule
from crescendo_trainer.measures import GradientNoise, curvature
from crescendo_trainer.models import build_model
from crescendo_trainer.optim import Neumann, build_optimizer
from crescendo_trainer.policies import build_policy
from crescendo_trainer.policies.base import (
    HESSIAN_EIGENVALUE,
    HESSIAN_TRACE,
    NOISE_SCALE_SIMPLE,
    Decision,
    Signals,
)
from crescendo_trainer.progress import Progress, Throughput, log_line, log_startup
from crescendo_trainer.sampler import ElasticSampler
from crescendo_trainer.signals import StopFlag

log = logging.getLogger("crescendo_trainer")


class Outcome(enum.Enum):
    DONE = "done"  # budget reached
    STOPPED = "stopped"  # a signal (this rank's or a peer's): checkpointed, restartable
    PEER_LOST = "peer_lost"  # a collective failed: checkpointed by rank 0, restart needed


@dataclass(frozen=True)
class StepResult:
    loss: float  # mean over the global batch
    stop: bool  # some rank was asked to stop
    seconds: float
    accumulation: int  # micro-steps this step took on every rank


class Trainer:
    def __init__(
        self, spec: JobSpec, env: Environment, metrics: TrainerMetrics, stop: StopFlag
    ) -> None:
        self.spec, self.env, self.metrics, self.stop = spec, env, metrics, stop
        self.device = distributed.device_for(env)
        self.world = env.world_size
        self.ckpt_dir = env.checkpoint_dir or Path(spec.checkpoint.dir)
        self.startup: dict[str, float] = {"begin": time.perf_counter()}
        self.data: TensorDataset = load_dataset(spec.dataset, cache_dir=env.data_cache)
        self.startup["data"] = time.perf_counter()
        self.sampler = ElasticSampler(len(self.data.train_y), spec.seed)
        torch.manual_seed(spec.seed)  # the same initial weights on every rank
        self.module = build_model(spec.model, self.data.input_shape, self.data.num_classes)
        self.module.to(self.device)
        self.model: nn.Module = self.module
        self.optimizer = build_optimizer(
            spec.optimizer, self.module.parameters(), spec.learning_rate.base
        )
        self.policy = build_policy(spec.batch, epochs=spec.epochs, adversarial=spec.adversarial)
        self.adversarial = AdversarialTraining(
            spec.adversarial, self.policy, block=spec.batch.initial, seed=spec.seed
        )
        self.conadv = (
            ConAdvFeed(spec.adversarial, self.module, self.sampler, self.data, self.device,
                       seed=spec.seed * 7919 + env.rank)  # the attack's draws differ by rank
            if spec.adversarial.method == "conadv" else None
        )
        self.noise = GradientNoise(self.policy)
        self.lr_rule = LrRule.from_spec(spec.learning_rate, spec.batch.initial)
        self.progress = Progress(global_batch=spec.batch.initial, world_size=self.world)
        self.trace = TraceWriter(env.trace_file, env.is_rank0)
        self.criterion = nn.CrossEntropyLoss(reduction="sum")
        self.resumed_from: Progress | None = None
        self.startup["model"] = time.perf_counter()
        self.traced_step = 0  # the last step written to the trace
        self.mark_writer: HighWaterWriter | None = None  # rank 0's, once restored

    # --- set-up -------------------------------------------------------------------------------
    def restore(self) -> None:
        """Load the newest good checkpoint (all ranks read the shared directory), then count the
        steps the previous run had completed beyond it."""
        loaded = checkpoint.load_latest(self.ckpt_dir)
        if loaded is None:
            lost = self.account_lost_steps()
            log.info("no checkpoint in %s: starting at step 0; %d steps lost (redone), %d in all",
                     self.ckpt_dir, lost.this_restart, lost.total)
            return
        payload = loaded.payload
        self.module.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.policy.load_state_dict(payload["policy"])
        torch.set_rng_state(payload["rng"])
        self.progress = Progress.from_state_dict(payload["progress"])
        self.resumed_from = Progress.from_state_dict(payload["progress"])
        if self.env.rank > 0:  # distinct streams per rank, reproducible from (seed, step)
            torch.manual_seed(self.spec.seed * 7919 + self.progress.step * 31 + self.env.rank)
        self.metrics.last_checkpoint_time = loaded.path.stat().st_mtime
        lost, p = self.account_lost_steps(), self.progress
        log.info("resumed from %s: step %d epoch %d batch %d (saved at world %d, now %d); "
                 "%d steps lost (redone), %d in all", loaded.path.name, p.step, p.epoch,
                 p.global_batch, p.world_size, self.world, lost.this_restart, lost.total)
        self.trace.write("resume", step=p.step, old_world=p.world_size, world=self.world)

    def account_lost_steps(self) -> LostSteps:
        """Add the steps done beyond the checkpoint (lost_steps.py) to the carried total; rank 0
        then keeps the high-water record, starting with this step as counted."""
        p = self.progress
        lost = count_lost_steps(high_water.read(self.ckpt_dir), p.step, p.lost_steps)
        p.lost_steps = lost.total
        self.metrics.lost_steps.inc(lost.total)
        if self.env.is_rank0:
            self.mark_writer = HighWaterWriter(self.ckpt_dir)
            self.mark_writer.write(p.step, p.lost_steps)
        return lost

    def wrap(self) -> None:
        if distributed.active():
            ids = [self.device.index] if self.device.type == "cuda" else None
            ddp = nn.parallel.DistributedDataParallel(self.module, device_ids=ids)
            self.noise.attach(ddp)
            self.model = ddp

    # --- one step -----------------------------------------------------------------------------
    def learning_rate(self) -> float:
        p = self.progress
        return self.lr_rule(p.step, p.epoch, p.global_batch)

    def train_step(self, permutation: torch.Tensor) -> StepResult:
        started = time.perf_counter()
        p = self.progress
        plan = layout(p.global_batch, self.world, self.spec.batch.per_gpu_max)
        chunks = self.sampler.micro_batches(permutation, p.position, plan, self.env.rank)
        scale = loss_scale(p.global_batch, self.world)
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate()
        if isinstance(self.optimizer, Neumann):
            self.optimizer.set_epoch(p.epoch)
        ratio = self.adversarial.ratio(p.global_batch, p.epoch)
        self.metrics.adversarial_ratio.set(ratio)
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        copies = None if self.conadv is None else self.conadv.adversarial_chunks(
            p.step, p.epoch, p.position, plan, self.env.rank)
        loss_sum = torch.zeros((), dtype=torch.float64)
        for i, index in enumerate(chunks):
            x = self.data.train_x[index].to(self.device, non_blocking=True)
            y = self.data.train_y[index].to(self.device, non_blocking=True)
            copy = None if copies is None else copies[i]
            loss = self.micro_step(x, y, copy, ratio, scale, last=i == len(chunks) - 1)
            loss_sum += loss.detach().double().cpu()
        params = list(self.module.parameters())
        self.noise.observe(params, plan.share(self.env.rank), p.global_batch)
        self.optimizer.step()
        p.step += 1
        p.position += p.global_batch
        p.samples_seen += p.global_batch
        p.world_size = self.world
        p.last_step_time = time.time()
        # One all-reduce agrees on the loss and on whether anyone must stop.
        stats = distributed.all_reduce_sum(
            torch.stack([loss_sum, torch.tensor(float(self.stop.raised), dtype=torch.float64)])
        )
        return StepResult(
            loss=float(stats[0]) / p.global_batch,
            stop=bool(stats[1] > 0),
            seconds=time.perf_counter() - started,
            accumulation=plan.accumulation,
        )

    def micro_step(
        self, x: torch.Tensor, y: torch.Tensor, copy: torch.Tensor | None, ratio: float,
        scale: float, last: bool,
    ) -> torch.Tensor:
        """Forward and backward of one micro-batch (all-reduced when `last`); its summed loss.
        With ConAdv, `copy` is the batch's adversarial copy and the loss ½·clean + ½·copy."""
        if copy is not None:
            return conadv_backward(self.model, self.criterion, (x, y), copy, scale, last)
        x = self.adversarial.apply(self.module, x, y, ratio, self.progress.step,
                                   self.data.num_classes)
        with distributed.no_sync_unless(last, self.model):
            loss: torch.Tensor = self.criterion(self.model(x), y)
            (loss * scale).backward()  # type: ignore[no-untyped-call]
        return loss

    # --- around the step ----------------------------------------------------------------------
    def budget_reached(self) -> bool:
        if self.spec.max_steps is not None and self.progress.step >= self.spec.max_steps:
            return True
        return self.spec.epochs is not None and self.progress.epoch >= self.spec.epochs

    def save(self, why: str, survivor: bool = False) -> None:
        if not (self.env.is_rank0 or survivor):
            return
        payload: dict[str, Any] = {
            "model": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "policy": self.policy.state_dict(),
            "progress": self.progress.state_dict(),
            "rng": torch.get_rng_state(),
        }
        keep = self.spec.checkpoint.keep
        path = checkpoint.save(self.ckpt_dir, self.progress.step, payload, keep)
        self.metrics.last_checkpoint_time = time.time()
        log.info("checkpoint %s (%s)", path.name, why)
        self.trace.write("checkpoint", step=self.progress.step, why=why)

    def evaluate(self) -> float:
        """Test accuracy of the exported weights (Neumann's w − μm), each rank scoring a stripe."""
        if isinstance(self.optimizer, Neumann):
            with self.optimizer.exported_weights():
                return self._accuracy()
        return self._accuracy()

    @torch.no_grad()
    def _accuracy(self) -> float:
        self.module.eval()
        xs = self.data.test_x[self.env.rank :: self.world]
        ys = self.data.test_y[self.env.rank :: self.world]
        correct = torch.zeros((), dtype=torch.float64)
        for start in range(0, len(ys), 1024):
            x = xs[start : start + 1024].to(self.device)
            predicted = self.module(x).argmax(dim=1).cpu()
            correct += (predicted == ys[start : start + 1024]).sum()
        totals = distributed.all_reduce_sum(torch.stack([correct, torch.tensor(float(len(ys)))]))
        return float(totals[0] / totals[1])

    def measure(self, epoch_end: bool) -> dict[str, float]:
        """What the policy asks for at this check point (the same on every rank)."""
        p = self.progress
        wanted = self.policy.measurements(p.step, p.epoch, epoch_end)
        measured: dict[str, float] = {}
        if HESSIAN_EIGENVALUE in wanted:
            data, settings = self.data, self.spec.batch.absa
            measured = curvature(self.module, data.train_x, data.train_y, settings,
                                 seed=self.spec.seed, epoch=p.epoch)
            self.metrics.hessian_trace.set(measured[HESSIAN_TRACE])
        for name, value in measured.items():
            self.trace.write("measure", step=p.step, name=name, value=value)
        return measured

    def decide(self, result: StepResult, epoch_end: bool) -> Decision:
        p = self.progress
        measured = self.measure(epoch_end)
        signals = Signals(p.step, p.epoch, epoch_end, p.global_batch, result.loss, measured)
        decision = self.policy.decide(signals)
        self.metrics.decisions[decision.code].inc()
        self.publish_policy_metrics()
        if decision.changed and decision.global_batch != p.global_batch:
            log.info("batch decision at step %d: %s", p.step, decision.reason)
            self.trace.write(
                "decision", step=p.step, old=p.global_batch, new=decision.global_batch,
                code=decision.code, reason=decision.reason,
            )
            p.global_batch = decision.global_batch
        return decision

    def after_step(self, result: StepResult, throughput: Throughput) -> None:
        p, m = self.progress, self.metrics
        if "first step" not in self.startup:
            self.startup["first step"] = time.perf_counter()
            log_startup(self.startup)
        if self.resumed_from is not None:
            pause = p.last_step_time - self.resumed_from.last_step_time
            m.rescale_pause.set(pause)
            self.trace.write("pause", step=p.step, seconds=pause,
                             old_world=self.resumed_from.world_size, world=self.world)
            self.resumed_from = None
        throughput.add(p.global_batch)
        m.step.set(p.step)
        m.epoch.set(p.epoch)
        m.loss.set(result.loss)
        m.learning_rate.set(self.learning_rate())
        m.step_duration.set(result.seconds)
        m.samples.inc(p.global_batch)
        self.traced_step = p.step
        if self.mark_writer is not None:
            self.mark_writer.write(p.step, p.lost_steps)
        self.trace.write(
            "step", step=p.step, epoch=p.epoch, world=self.world, batch=p.global_batch,
            accumulation=result.accumulation, loss=result.loss, lr=self.learning_rate(),
            seconds=result.seconds,
        )
        if self.env.is_rank0 and p.step % self.spec.log_every_steps == 0:
            log_line(p, result.loss, self.learning_rate(), throughput.take())

    def record_unreported_step(self) -> None:
        """A step whose update was applied when the collective after it failed: it is complete
        (and checkpointed), but its loss was never agreed, so it is traced without one."""
        p = self.progress
        if p.step > self.traced_step:
            self.trace.write("step", step=p.step, epoch=p.epoch, world=self.world,
                             batch=p.global_batch, loss=None, unreported=True)
            self.traced_step = p.step

    def publish_policy_metrics(self) -> None:
        values = self.policy.metrics()
        if HESSIAN_EIGENVALUE in values:
            self.metrics.hessian_eigenvalue.set(values[HESSIAN_EIGENVALUE])
        if NOISE_SCALE_SIMPLE in values:
            self.metrics.noise_scale.set(values[NOISE_SCALE_SIMPLE])
            if self.progress.step % self.spec.log_every_steps == 0:
                self.trace.write("measure", step=self.progress.step, name=NOISE_SCALE_SIMPLE,
                                 value=values[NOISE_SCALE_SIMPLE])

    def publish_batch(self) -> None:
        self.metrics.global_batch.set(self.progress.global_batch)
        self.metrics.desired_batch.set(self.progress.global_batch)
        self.metrics.world_size.set(self.world)

    # --- the loop -----------------------------------------------------------------------------
    def run(self) -> Outcome:
        self.startup["group"] = time.perf_counter()
        self.restore()
        self.startup["checkpoint"] = time.perf_counter()
        self.wrap()
        self.startup["ddp"] = time.perf_counter()
        self.publish_batch()
        try:
            return self.loop()
        finally:
            if self.conadv is not None:
                self.conadv.close()

    def loop(self) -> Outcome:
        throughput = Throughput()
        while not self.budget_reached():
            try:
                outcome = self.iterate(throughput)
            except Exception as exc:
                if not distributed.is_peer_lost(exc):
                    raise
                log.warning("a peer left (%s): saving step %d", exc, self.progress.step)
                self.record_unreported_step()
                # Rank 0 may be the one that left: the first process of every surviving node
                # saves (all hold the same state; the atomic rename makes the writes race-free).
                self.save("peer lost", survivor=self.env.local_rank == 0)
                return Outcome.PEER_LOST
            if outcome is not None:
                return outcome
        if self.progress.accuracy is None:
            self.progress.accuracy = self.evaluate()
        self.save("budget reached")
        self.metrics.budget_reached.set(1)
        self.trace.write("done", step=self.progress.step, accuracy=self.progress.accuracy)
        return Outcome.DONE

    def iterate(self, throughput: Throughput) -> Outcome | None:
        """One step and what follows it; an Outcome when the loop must end."""
        p = self.progress
        if not self.sampler.has_room(p.position, p.global_batch):
            p.epoch, p.position = p.epoch + 1, 0
            return None
        result = self.train_step(self.sampler.permutation(p.epoch))
        if not math.isfinite(result.loss):
            log.warning("loss is %s at step %d", result.loss, p.step)
        epoch_end = not self.sampler.has_room(p.position, p.global_batch)
        self.after_step(result, throughput)
        decision = self.decide(result, epoch_end)
        if epoch_end:
            p.accuracy = self.evaluate()
            self.metrics.accuracy.set(p.accuracy)
            self.trace.write("eval", step=p.step, epoch=p.epoch, accuracy=p.accuracy)
        if result.stop:
            self.save("stop requested")
            self.trace.write("stop", step=p.step, signal=self.stop.signal_name)
            return Outcome.STOPPED
        if decision.changed:
            self.publish_batch()
            self.save(decision.reason)
        elif p.step % self.spec.checkpoint.every_steps == 0:
            self.save("every steps")
        return None
