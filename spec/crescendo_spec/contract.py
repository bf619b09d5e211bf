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
# A language model's quality instead of accuracy: validation loss in nats per token, and its exp.
METRIC_EVAL_LOSS: Final = PREFIX + "eval_loss"
METRIC_EVAL_PERPLEXITY: Final = PREFIX + "eval_perplexity"
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
# torchrun's TORCHELASTIC_RESTART_COUNT: worker-group restarts after failures, by this pod's agent
METRIC_WORKER_RESTARTS: Final = PREFIX + "worker_restarts"
# A counter (..._lost_steps_total) carried in the checkpoint: steps done, then redone after a
# restart because the checkpoint resumed from did not hold them.
METRIC_LOST_STEPS: Final = PREFIX + "lost_steps"

TRAINER_METRICS: Final = (
    METRIC_GLOBAL_BATCH,
    METRIC_DESIRED_BATCH,
    METRIC_WORLD_SIZE,
    METRIC_STEP,
    METRIC_EPOCH,
    METRIC_SAMPLES,
    METRIC_LOSS,
    METRIC_ACCURACY,
    METRIC_EVAL_LOSS,
    METRIC_EVAL_PERPLEXITY,
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
    METRIC_WORKER_RESTARTS,
    METRIC_LOST_STEPS,
)

# --- metrics the operator exports on its own /metrics --------------------------------------------
# The job_* series are per AdaptiveBatchJob and carry the trainer's two labels, so one dashboard
# selector serves both; the others are the operator's own health.
OPERATOR_PREFIX: Final = "crescendo_operator_"
METRIC_OP_RECONCILE: Final = OPERATOR_PREFIX + "reconcile_duration_seconds"  # histogram
METRIC_OP_RESCALES: Final = OPERATOR_PREFIX + "rescales"  # counter by `direction`: ..._total
METRIC_OP_REACTION: Final = OPERATOR_PREFIX + "decision_to_pods_created_seconds"  # histogram
METRIC_OP_JOBS: Final = OPERATOR_PREFIX + "jobs"  # gauge by `phase`
METRIC_JOB_REPLICAS: Final = OPERATOR_PREFIX + "job_replicas"  # worker pods not terminating
METRIC_JOB_READY: Final = OPERATOR_PREFIX + "job_ready_replicas"
METRIC_JOB_DESIRED: Final = OPERATOR_PREFIX + "job_desired_replicas"  # the scaling target
METRIC_JOB_UNSCHEDULABLE: Final = OPERATOR_PREFIX + "job_unschedulable_replicas"
METRIC_JOB_RESTARTS: Final = OPERATOR_PREFIX + "job_container_restarts"  # status.restarts
METRIC_JOB_RESCALES: Final = OPERATOR_PREFIX + "job_rescales"  # status.rescales
METRIC_JOB_CONDITION: Final = OPERATOR_PREFIX + "job_condition"  # 1/0 by `condition` (type)
LABEL_CONDITION: Final = "condition"

OPERATOR_METRICS: Final = (
    METRIC_OP_RECONCILE,
    METRIC_OP_RESCALES,
    METRIC_OP_REACTION,
    METRIC_OP_JOBS,
    METRIC_JOB_REPLICAS,
    METRIC_JOB_READY,
    METRIC_JOB_DESIRED,
    METRIC_JOB_UNSCHEDULABLE,
    METRIC_JOB_RESTARTS,
    METRIC_JOB_RESCALES,
    METRIC_JOB_CONDITION,
)

# --- labels and annotations on the operator's children ------------------------------------------
GROUP: Final = "crescendo.dev"
POD_LABEL_JOB: Final = GROUP + "/job"
POD_LABEL_REPLICA: Final = GROUP + "/replica-index"
POD_LABEL_ROLE: Final = GROUP + "/role"  # "worker"
ANNOTATION_LAST_SCALE: Final = GROUP + "/last-scale-time"  # RFC 3339, restart-safe cooldown
