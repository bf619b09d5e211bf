"""The one sink of the trainer's facts: each fact is handed over once and goes everywhere from here.

A completed step, a decision, a measurement, an evaluation, a checkpoint, a restart: the job (or
the user's loop, through it) reports each fact once to `Telemetry`, which writes the run trace
(crescendo_spec.trace, rank 0), sets the Prometheus series (exporter.py, the contract), keeps the
high-water record of completed steps (high_water.py, rank 0) and logs the line a person reads.
Nothing else in the trainer writes the trace or sets a gauge.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass

from crescendo_spec.trace import TraceWriter

from crescendo_trainer.exporter import TrainerMetrics
from crescendo_trainer.high_water import HighWaterWriter
from crescendo_trainer.policies.base import (
    HESSIAN_EIGENVALUE,
    HESSIAN_TRACE,
    NOISE_SCALE_SIMPLE,
    Decision,
)
from crescendo_trainer.progress import Progress, Throughput, log_startup

log = logging.getLogger("crescendo_trainer")

# Quality names an evaluation may report, as the trace and the local summary spell them.
ACCURACY, VAL_LOSS, PERPLEXITY = "accuracy", "val_loss", "perplexity"
Quality = Mapping[str, float]


@dataclass(frozen=True)
class StepFacts:
    """What one completed optimizer step tells (identical on every rank)."""

    loss: float  # mean over the global batch
    seconds: float
    accumulation: int  # micro-steps this step took on every rank
    lr: float


class Telemetry:
    def __init__(
        self, metrics: TrainerMetrics, trace: TraceWriter, *, rank0: bool, log_every: int
    ) -> None:
        self.metrics, self.trace, self.rank0, self.log_every = metrics, trace, rank0, log_every
        self.mark: HighWaterWriter | None = None  # rank 0's, once the restore has counted
        self.traced_step = 0  # the last step written to the trace
        self.throughput = Throughput()
        self.startup: dict[str, float] = {"begin": time.perf_counter()}

    # --- start-up -----------------------------------------------------------------------------
    def phase(self, name: str) -> None:
        """A start-up phase ended (the rescale pause is mostly start-up: this says where)."""
        self.startup[name] = time.perf_counter()

    def resumed(self, p: Progress, world: int, checkpoint: str, lost: int) -> None:
        log.info("resumed from %s: step %d epoch %d batch %d (saved at world %d, now %d); "
                 "%d steps lost (redone), %d in all", checkpoint, p.step, p.epoch,
                 p.global_batch, p.world_size, world, lost, p.lost_steps)
        self.trace.write("resume", step=p.step, old_world=p.world_size, world=world)

    def lost_steps(self, total: int) -> None:
        self.metrics.lost_steps.inc(total)

    def keep_high_water(self, mark: HighWaterWriter, p: Progress) -> None:
        self.mark = mark
        mark.write(p.step, p.lost_steps)

    def batch(self, global_batch: int, world: int) -> None:
        """The batch in use (and asked for: the trainer applies its own decisions at once)."""
        self.metrics.global_batch.set(global_batch)
        self.metrics.desired_batch.set(global_batch)
        self.metrics.world_size.set(world)

    # --- per step -----------------------------------------------------------------------------
    def step(self, p: Progress, facts: StepFacts, world: int) -> None:
        if "first step" not in self.startup:
            self.phase("first step")
            log_startup(self.startup)
        m = self.metrics
        self.throughput.add(p.global_batch)
        m.step.set(p.step)
        m.epoch.set(p.epoch)
        m.loss.set(facts.loss)
        m.learning_rate.set(facts.lr)
        m.step_duration.set(facts.seconds)
        m.samples.inc(p.global_batch)
        if self.mark is not None:
            self.mark.write(p.step, p.lost_steps)
        self.traced_step = p.step
        self.trace.write(
            "step", step=p.step, epoch=p.epoch, world=world, batch=p.global_batch,
            accumulation=facts.accumulation, loss=facts.loss, lr=facts.lr, seconds=facts.seconds,
        )
        if not math.isfinite(facts.loss):
            log.warning("loss is %s at step %d", facts.loss, p.step)
        if self.rank0 and p.step % self.log_every == 0:
            log.info("step %d epoch %d world %d batch %d loss %.4f lr %.4g samples/s %.0f",
                     p.step, p.epoch, world, p.global_batch, facts.loss, facts.lr,
                     self.throughput.take())

    def unreported_step(self, p: Progress, world: int) -> None:
        """A step whose update was applied when the collective after it failed: complete (and
        checkpointed), but its loss was never agreed, so it is traced without one."""
        if p.step > self.traced_step:
            self.trace.write("step", step=p.step, epoch=p.epoch, world=world,
                             batch=p.global_batch, loss=None, unreported=True)
            self.traced_step = p.step

    def pause(self, step: int, seconds: float, old_world: int, world: int) -> None:
        self.metrics.rescale_pause.set(seconds)
        self.trace.write("pause", step=step, seconds=seconds, old_world=old_world, world=world)

    def adversarial_ratio(self, ratio: float) -> None:
        self.metrics.adversarial_ratio.set(ratio)

    def measured(self, step: int, values: Mapping[str, float], *, traced: bool) -> None:
        """A policy's measurements (exported always; traced when `traced`: λ at each check,
        the noise scale every logging period, not every step)."""
        gauges = {
            HESSIAN_EIGENVALUE: self.metrics.hessian_eigenvalue,
            HESSIAN_TRACE: self.metrics.hessian_trace,
            NOISE_SCALE_SIMPLE: self.metrics.noise_scale,
        }
        for name, value in values.items():
            if name in gauges:
                gauges[name].set(value)
            if traced:
                self.trace.write("measure", step=step, name=name, value=value)

    def decision(self, step: int, old: int, decision: Decision) -> None:
        self.metrics.decisions[decision.code].inc()
        if decision.changed and decision.global_batch != old:
            log.info("batch decision at step %d: %s", step, decision.reason)
            self.trace.write("decision", step=step, old=old, new=decision.global_batch,
                             code=decision.code, reason=decision.reason)

    # --- around the steps ---------------------------------------------------------------------
    def evaluation(self, p: Progress, quality: Quality) -> None:
        if ACCURACY in quality:
            self.metrics.accuracy.set(quality[ACCURACY])
        if VAL_LOSS in quality:
            self.metrics.eval_loss.set(quality[VAL_LOSS])
        if PERPLEXITY in quality:
            self.metrics.eval_perplexity.set(quality[PERPLEXITY])
        shown = ", ".join(f"{k} {v:.4g}" for k, v in quality.items())
        log.info("evaluation at step %d epoch %d: %s", p.step, p.epoch, shown)
        self.trace.write("eval", step=p.step, epoch=p.epoch, **quality)

    def checkpoint(self, step: int, name: str, why: str) -> None:
        self.metrics.last_checkpoint_time = time.time()
        log.info("checkpoint %s (%s)", name, why)
        self.trace.write("checkpoint", step=step, why=why)

    def checkpoint_seen(self, mtime: float) -> None:
        self.metrics.last_checkpoint_time = mtime

    def stopped(self, step: int, signal_name: str | None) -> None:
        self.trace.write("stop", step=step, signal=signal_name)

    def done(self, step: int, quality: Quality) -> None:
        self.metrics.budget_reached.set(1)
        self.trace.write("done", step=step, **quality)

    def close(self) -> None:
        if self.mark is not None:
            self.mark.close()
        self.trace.close()
