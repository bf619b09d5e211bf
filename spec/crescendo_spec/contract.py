"""The trainer ↔ operator contract: environment variables, metric names, labels, annotations.

Written once here and in docs/contract.md; golden tests pin both sides to it. The operator sets
the ENV_* variables on every worker pod; the trainer exports the METRIC_* names with the LABEL_*
labels (low cardinality only: no pod, no step).
"""

from __future__ import annotations

from typing import Final

# --- environment variables the operator (or `crescendo local`) sets on every worker -------------
ENV_JOB_NAME: Final = "CRESCENDO_JOB_NAME"
ENV_NAMESPACE: Final = "CRESCENDO_NAMESPACE"
ENV_REPLICA_INDEX: Final = "CRESCENDO_REPLICA_INDEX"
ENV_SPEC_JSON: Final = "CRESCENDO_SPEC_JSON"  # the validated spec, as JSON
ENV_METRICS_PORT: Final = "CRESCENDO_METRICS_PORT"  # overrides spec.metrics.port (local backend)
ENV_CHECKPOINT_DIR: Final = "CRESCENDO_CHECKPOINT_DIR"  # overrides spec.checkpoint.dir
ENV_TRACE_FILE: Final = "CRESCENDO_TRACE_FILE"  # optional JSONL of completed steps (rank 0)
# torch 2.13: a second agent never joins a c10d rendezvous unless every agent sets this.
ENV_DISABLE_SHARED_STORE: Final = "TORCH_DISABLE_SHARE_RDZV_TCP_STORE"

OPERATOR_ENV: Final = (
    ENV_JOB_NAME,
    ENV_NAMESPACE,
    ENV_REPLICA_INDEX,
    ENV_SPEC_JSON,
    ENV_METRICS_PORT,
    ENV_CHECKPOINT_DIR,
    ENV_DISABLE_SHARED_STORE,
)

# --- metrics the trainer exports (one process per pod serves /metrics) --------------------------
PREFIX: Final = "crescendo_trainer_"
LABEL_JOB: Final = "crescendo_job"  # not `job`: Prometheus renames that to exported_job
LABEL_NAMESPACE: Final = "crescendo_namespace"
TRAINER_LABELS: Final = (LABEL_JOB, LABEL_NAMESPACE)

METRIC_GLOBAL_BATCH: Final = PREFIX + "global_batch_size"
METRIC_DESIRED_BATCH: Final = PREFIX + "desired_global_batch_size"
METRIC_WORLD_SIZE: Final = PREFIX + "world_size"
METRIC_STEP: Final = PREFIX + "optimizer_step"
METRIC_EPOCH: Final = PREFIX + "epoch"
METRIC_SAMPLES: Final = PREFIX + "samples"  # a counter: exposed as ..._samples_total
METRIC_LOSS: Final = PREFIX + "loss"
METRIC_ACCURACY: Final = PREFIX + "eval_accuracy_ratio"
METRIC_LEARNING_RATE: Final = PREFIX + "learning_rate"
METRIC_STEP_DURATION: Final = PREFIX + "step_duration_seconds"
METRIC_CHECKPOINT_AGE: Final = PREFIX + "checkpoint_age_seconds"
METRIC_RESCALE_PAUSE: Final = PREFIX + "rescale_pause_seconds"
METRIC_HESSIAN_EIGENVALUE: Final = PREFIX + "hessian_top_eigenvalue"
METRIC_HESSIAN_TRACE: Final = PREFIX + "hessian_trace"
METRIC_NOISE_SCALE: Final = PREFIX + "gradient_noise_scale"
METRIC_ADVERSARIAL_RATIO: Final = PREFIX + "adversarial_ratio"
METRIC_DECISION: Final = PREFIX + "batch_decisions"  # counter by `reason`: ..._total
METRIC_BUDGET_DONE: Final = PREFIX + "budget_reached"  # 1 once the step/epoch budget is done

TRAINER_METRICS: Final = (
    METRIC_GLOBAL_BATCH,
    METRIC_DESIRED_BATCH,
    METRIC_WORLD_SIZE,
    METRIC_STEP,
    METRIC_EPOCH,
    METRIC_SAMPLES,
    METRIC_LOSS,
    METRIC_ACCURACY,
    METRIC_LEARNING_RATE,
    METRIC_STEP_DURATION,
    METRIC_CHECKPOINT_AGE,
    METRIC_RESCALE_PAUSE,
    METRIC_HESSIAN_EIGENVALUE,
    METRIC_HESSIAN_TRACE,
    METRIC_NOISE_SCALE,
    METRIC_ADVERSARIAL_RATIO,
    METRIC_DECISION,
    METRIC_BUDGET_DONE,
)

# --- labels and annotations on the operator's children ------------------------------------------
GROUP: Final = "crescendo.dev"
POD_LABEL_JOB: Final = GROUP + "/job"
POD_LABEL_REPLICA: Final = GROUP + "/replica-index"
POD_LABEL_ROLE: Final = GROUP + "/role"  # "worker"
ANNOTATION_LAST_SCALE: Final = GROUP + "/last-scale-time"  # RFC 3339, restart-safe cooldown
