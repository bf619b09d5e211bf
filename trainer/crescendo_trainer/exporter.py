"""The trainer's Prometheus exporter: the metrics of the contract (docs/contract.md).

Metrics live in an injected CollectorRegistry (tests make their own); one process per pod
(local rank 0) serves it on `metrics.port`. Every series carries the two low-cardinality labels
crescendo_job and crescendo_namespace so one Prometheus query selects a job; nothing else
(no pod, no step) is a label.

Counters follow Prometheus' reset rule: `samples_total` counts this process's samples from 0 (a
restart is a counter reset, which rate() expects; restoring the checkpoint's total would make a
restart that redid steps look like a reset and a spike). `lost_steps_total` carries its total in
the checkpoint so that it never goes down, and, like the gauges, appears only once it is known:
no scrape sees a 0 between a restart and the restore.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from crescendo_spec import contract
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    disable_created_metrics,
    start_http_server,
)

from crescendo_trainer.policies.base import REASON_CODES

# The `_created` series prometheus-client adds to counters are not in the contract, and each is
# one more series per job for Prometheus to store.
disable_created_metrics()  # type: ignore[no-untyped-call]


class _Unset:
    """A gauge whose series appears only once it is set: a trainer that has not restored its
    state yet exports no batch size at all, rather than a 0 the operator would have to reject."""

    def __init__(self, parent: Gauge, values: tuple[str, str]) -> None:
        self._parent, self._values = parent, values

    def set(self, value: float) -> None:
        self._parent.labels(*self._values).set(value)


class _Uncounted:
    """A counter whose series appears at its first `inc` (which may add 0)."""

    def __init__(self, parent: Counter, values: tuple[str, str]) -> None:
        self._parent, self._values = parent, values

    def inc(self, amount: float = 1.0) -> None:
        self._parent.labels(*self._values).inc(amount)


@dataclass
class TrainerMetrics:
    job: str
    namespace: str
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    last_checkpoint_time: float | None = None

    def __post_init__(self) -> None:
        labels = list(contract.TRAINER_LABELS)
        values = (self.job, self.namespace)

        def gauge(name: str, doc: str) -> _Unset:
            return _Unset(Gauge(name, doc, labels, registry=self.registry), values)

        self.global_batch = gauge(contract.METRIC_GLOBAL_BATCH, "Global batch size in use.")
        self.desired_batch = gauge(
            contract.METRIC_DESIRED_BATCH, "Global batch size the policy asks for."
        )
        self.world_size = gauge(contract.METRIC_WORLD_SIZE, "Trainer processes in the group.")
        self.step = gauge(contract.METRIC_STEP, "Optimizer steps completed.")
        self.epoch = gauge(contract.METRIC_EPOCH, "Current epoch (0-based).")
        self.loss = gauge(contract.METRIC_LOSS, "Mean training loss of the last step.")
        self.accuracy = gauge(contract.METRIC_ACCURACY, "Test accuracy at the last evaluation.")
        self.eval_loss = gauge(
            contract.METRIC_EVAL_LOSS, "Validation loss at the last evaluation, nats per token."
        )
        self.eval_perplexity = gauge(
            contract.METRIC_EVAL_PERPLEXITY, "Perplexity (exp of the validation loss)."
        )
        self.learning_rate = gauge(contract.METRIC_LEARNING_RATE, "Learning rate in use.")
        self.step_duration = gauge(
            contract.METRIC_STEP_DURATION, "Wall time of the last optimizer step."
        )
        self.rescale_pause = gauge(
            contract.METRIC_RESCALE_PAUSE,
            "Last step at the old world size to first step at the new one.",
        )
        self.hessian_eigenvalue = gauge(
            contract.METRIC_HESSIAN_EIGENVALUE, "Top Hessian eigenvalue at the last check."
        )
        self.hessian_trace = gauge(contract.METRIC_HESSIAN_TRACE, "Hutchinson Hessian trace.")
        self.noise_scale = gauge(contract.METRIC_NOISE_SCALE, "Gradient noise scale B_simple.")
        self.adversarial_ratio = gauge(
            contract.METRIC_ADVERSARIAL_RATIO,
            "Share of the samples trained on that are adversarial (ConAdv: 0.5).",
        )
        self.budget_reached = gauge(
            contract.METRIC_BUDGET_DONE, "1 once the step/epoch budget is done."
        )
        self.samples = Counter(
            contract.METRIC_SAMPLES,
            "Training samples processed by this process's group since it started.",
            labels,
            registry=self.registry,
        ).labels(*values)
        self.worker_restarts = gauge(
            contract.METRIC_WORKER_RESTARTS,
            "Worker-group restarts after failures by this pod's torchrun agent.",
        )
        self.lost_steps = _Uncounted(
            Counter(
                contract.METRIC_LOST_STEPS,
                "Steps done, then redone after a restart because the checkpoint lacked them.",
                labels,
                registry=self.registry,
            ),
            values,
        )
        age = Gauge(
            contract.METRIC_CHECKPOINT_AGE,
            "Seconds since the last checkpoint this process saw saved.",
            labels,
            registry=self.registry,
        ).labels(*values)
        age.set_function(self._checkpoint_age)
        decisions = Counter(
            contract.METRIC_DECISION,
            "Batch-size decisions by reason code.",
            [*labels, "reason"],
            registry=self.registry,
        )
        self.decisions = {code: decisions.labels(*values, code) for code in REASON_CODES}

    def _checkpoint_age(self) -> float:
        if self.last_checkpoint_time is None:
            return float("nan")
        return time.time() - self.last_checkpoint_time

    def serve(self, port: int) -> None:
        """Serve /metrics on all interfaces (the pod's IP) from a daemon thread."""
        start_http_server(port, registry=self.registry)
