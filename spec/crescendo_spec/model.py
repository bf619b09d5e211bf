"""The typed, validated `spec` of an AdaptiveBatchJob (crescendo.dev/v1alpha1).

This module owns every field, its bounds, enum and default (DESIGN.md §3). The CRD's
openAPIV3Schema is generated from it (`crescendo_spec.crd`), and both the operator and the trainer
parse a spec with `parse_spec`, so there is one validation and one set of messages.
Models are frozen; JSON/YAML keys are camelCase, Python attributes snake_case.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from crescendo_spec.schedule import (
    COUNT_PATTERN,
    STEPS_PATTERN,
    ScheduleUnit,
    format_units,
    parse_step_schedule,
    parse_units,
)

# A user's own model or data set: "package.module:function".
# The one list of built-in names: the reference patterns, the CRD and the messages derive from it.
# "gpt" and "python-stdlib" are the causal language-modelling task (a model and a token corpus);
# the others are image classification.
BUILTIN_MODELS = ("cnn", "mlp", "gpt")
BUILTIN_DATASETS = ("digits", "mnist5k", "fashion-mnist", "python-stdlib")
LANGUAGE_DATASETS = ("python-stdlib",)
_USER_REF = r"[A-Za-z_][\w.]*:[A-Za-z_]\w*"
MODEL_REF = rf"^({'|'.join(BUILTIN_MODELS)}|{_USER_REF})$"
DATASET_REF = rf"^({'|'.join(BUILTIN_DATASETS)}|{_USER_REF})$"
# A user's torchrun script (a .py path inside the image) or module (`python -m` name).
SCRIPT_PATH = r"^[\w./-]+\.py$"
MODULE_NAME = r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$"


class _Spec(BaseModel):
    """Base of every spec section: camelCase keys, no unknown keys, immutable."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class Replicas(_Spec):
    min: int = Field(1, ge=1, le=1024, description="Fewest worker replicas (pods).")
    max: int = Field(4, ge=1, le=1024, description="Most worker replicas (pods).")
    initial: int | None = Field(None, ge=1, le=1024, description="Replicas at start; default min.")
    # The CRD's scale subresource writes here (`kubectl scale abj/x --replicas=N`): a manual pin
    # that overrides the trainers' decisions until the user clears it (sets it to null).
    manual: int | None = Field(
        None, ge=1, le=1024, description="Pinned replica count (kubectl scale); null: automatic."
    )

    @model_validator(mode="after")
    def _ordered(self) -> Replicas:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) must be <= max ({self.max})")
        if self.initial is not None and not self.min <= self.initial <= self.max:
            raise ValueError(
                f"initial ({self.initial}) must lie in [min, max] = [{self.min}, {self.max}]"
            )
        return self

    @property
    def start(self) -> int:
        return self.initial if self.initial is not None else self.min


class AdaBatchSettings(_Spec):
    """AdaBatch (arXiv 1712.02029): multiply B by `factor` every `resizeEveryEpochs`.

    The paper's LR rule needs no field here (one way to set the LR): with learningRate.scaling
    linear the LR grows by β with B, and its γ (the fixed-batch schedule's decay at a resize) is
    learningRate.decayEpochs/decayFactor; its warm-up is learningRate.warmupSteps.
    """

    factor: int = Field(2, ge=2, le=16, description="β: batch multiplier at each resize.")
    resize_every_epochs: int = Field(20, ge=1, le=10_000, description="Epochs between resizes.")


class AbsaSettings(_Spec):
    """ABS/ABSA (arXiv 1810.01021): grow B when the Hessian's top eigenvalue drops by κ."""

    kappa: float = Field(2.0, gt=1.0, le=1e6, description="κ: λ must fall to λ_ref/κ to grow.")
    factor: int = Field(2, ge=2, le=16, description="Batch multiplier at each increase.")
    duration_epochs: int = Field(
        10, ge=1, le=10_000, description="Grow anyway after this many epochs without a growth."
    )
    check_every_epochs: int = Field(1, ge=1, le=10_000, description="Epochs between λ checks.")
    hessian_batch: int = Field(128, ge=1, le=65_536, description="Samples in the λ batch.")
    # λ on 128 samples swings several-fold between batches (PyHessian's maintainer reports
    # 159–1,587 and advises ~4,096): a larger batch or the mean over several is steadier.
    hessian_batches: int = Field(
        1, ge=1, le=64, description="Seeded λ batches whose eigenvalues are averaged."
    )
    iterations: int = Field(10, ge=1, le=1_000, description="Power-iteration limit.")
    tolerance: float = Field(1e-2, gt=0.0, le=1.0, description="Relative change to stop at.")
    method: Literal["lanczos", "power"] = Field(
        "lanczos", description="λ estimator: Lanczos or power iteration, same product budget."
    )
    adversarial_epochs_fraction: float = Field(
        0.5, ge=0.0, le=1.0, description="ABSA stops adversarial mixing after this share of epochs."
    )


class GnsSettings(_Spec):
    """Gradient-noise-scale growth (McCandlish et al. 2018), as AdaptDL/Pollux anchor."""

    min_gain: float = Field(0.05, ge=0.0, le=10.0, description="Least predicted gain to grow.")
    cooldown_steps: int = Field(50, ge=0, le=1_000_000, description="Steps between decisions.")
    ema: float = Field(0.95, ge=0.0, lt=1.0, description="Moving-average decay of the estimates.")
    allow_shrink: bool = Field(False, description="Whether B may fall below its current value.")
    factor: int = Field(2, ge=2, le=16, description="B moves in powers of this factor.")


class GoodputSettings(_Spec):
    """Goodput (Pollux, Qiao et al., OSDI'21): B maximises throughput × statistical efficiency.

    The noise scale it reads is the same measurement as `gns`'s, smoothed by batch.gns.ema.
    """

    min_gain: float = Field(
        0.05, ge=0.0, le=10.0, description="Least predicted goodput gain to change B (AdaptDL: 5%)."
    )
    cooldown_steps: int = Field(50, ge=0, le=1_000_000, description="Steps between decisions.")
    factor: int = Field(
        2, ge=2, le=16, description="B moves in powers of this factor, one power per decision."
    )
    # A 25M-parameter fp32 gradient (100 MB) ring-all-reduced between two pods over 10 Gb/s
    # Ethernet takes 2·(1/2)·100 MB / 1.25 GB/s = 80 ms: a replica is assumed to cost about that
    # until a multi-replica step is measured, so a job whose steps are shorter does not rescale
    # on a guess.
    sync_prior_seconds: float = Field(
        0.1, ge=0.0, le=3_600.0,
        description="Assumed all-reduce seconds per extra replica until a multi-replica step "
        "is measured.",
    )
    allow_shrink: bool = Field(False, description="Whether B may fall below its current value.")
    unschedulable_after_seconds: int | None = Field(
        None, ge=1, le=86_400,
        description="Training seconds the replicas a decision needs are waited for before the "
        "policy plans with the replicas it has; default scaling.scheduleTimeoutSeconds + "
        "scaling.cooldownSeconds.",
    )

    def unschedulable_wait_seconds(self, scaling: Scaling) -> int:
        """`unschedulableAfterSeconds`, or the operator's longest wait for a pod: its cooldown
        before the scale-up, then the schedule timeout before it gives the pod back."""
        if self.unschedulable_after_seconds is not None:
            return self.unschedulable_after_seconds
        return scaling.schedule_timeout_seconds + scaling.cooldown_seconds


# Exactly one of `steps` and `rampUnits` is set (Batch checks it); both strings are read by
# crescendo_spec.schedule, the one parser of the spec validator, the operator and the trainer.
class ScheduleSettings(_Spec):
    """B over consumed tokens or samples: Megatron-LM's step schedule or GPT-3's linear ramp."""

    steps: str | None = Field(
        None,
        max_length=1024,
        json_schema_extra={"pattern": STEPS_PATTERN},
        description="Step schedule of threshold:batch pairs, e.g. '0:16 2.4B:320': from each "
        "threshold of consumed units on, that global batch (K/M/B/T = 1e3/1e6/1e9/1e12).",
    )
    ramp_units: str | None = Field(
        None,
        max_length=32,
        json_schema_extra={"pattern": COUNT_PATTERN},
        description="Linear ramp: B grows from batch.initial to batch.max over this many "
        "consumed units (e.g. '4B'), then stays at batch.max.",
    )
    # Each change of B may rescale the job (a checkpoint and a restart), so the ramp moves in
    # steps of `increment` rather than at every optimizer step.
    increment: int | None = Field(
        None, ge=1, le=1 << 24, description="The ramp moves B in multiples of this; default "
        "batch.initial.",
    )
    unit: ScheduleUnit = Field(
        "auto", description="What thresholds count: tokens (samples × language.seqLen), samples, "
        "or auto: tokens for model gpt, samples otherwise.",
    )

    @field_validator("steps")
    @classmethod
    def _steps_grammar(cls, value: str | None) -> str | None:
        if value is not None:
            parse_step_schedule(value)
        return value

    @field_validator("ramp_units")
    @classmethod
    def _ramp_length(cls, value: str | None) -> str | None:
        if value is not None and parse_units(value) < 1:
            raise ValueError(f"{value!r}: the ramp must be at least 1 unit long")
        return value

    @property
    def step_schedule(self) -> tuple[tuple[int, int], ...] | None:
        """`steps` as (threshold, batch) pairs, or None for a ramp."""
        return None if self.steps is None else parse_step_schedule(self.steps)

    @property
    def ramp_unit_count(self) -> int | None:
        """`rampUnits` as a number, or None for a step schedule."""
        return None if self.ramp_units is None else parse_units(self.ramp_units)

    def ramp_increment(self, initial: int) -> int:
        """The ramp's step: `increment`, or batch.initial (Megatron's usual `--rampup-batch-size
        32 32 N` starts at and grows by the same size)."""
        return self.increment if self.increment is not None else initial


class Batch(_Spec):
    initial: int = Field(128, ge=1, le=1 << 24, description="Global batch at start (B0).")
    max: int = Field(4096, ge=1, le=1 << 24, description="Largest global batch (B_max).")
    per_gpu_max: int = Field(
        256, ge=1, le=1 << 20, description="Largest micro-batch one process holds."
    )
    policy: Literal["fixed", "adabatch", "abs", "absa", "gns", "schedule", "goodput"] = Field(
        "fixed", description="Who grows the global batch."
    )
    adabatch: AdaBatchSettings = AdaBatchSettings()
    absa: AbsaSettings = AbsaSettings()
    gns: GnsSettings = GnsSettings()
    schedule: ScheduleSettings = ScheduleSettings()
    goodput: GoodputSettings = GoodputSettings()

    @model_validator(mode="after")
    def _ordered(self) -> Batch:
        if self.initial > self.max:
            raise ValueError(f"initial ({self.initial}) must be <= max ({self.max})")
        if self.policy == "schedule":
            self._check_schedule()
        return self

    def _check_schedule(self) -> None:
        """The schedule fits this batch section (its strings' grammar is checked already)."""
        schedule = self.schedule
        if (schedule.steps is None) == (schedule.ramp_units is None):
            raise ValueError(
                "policy 'schedule' needs exactly one of schedule.steps (a step schedule, e.g. "
                "'0:16 2.4B:320') or schedule.rampUnits (a linear ramp from initial to max, "
                "e.g. '4B')"
            )
        steps = schedule.step_schedule
        if steps is not None:
            # The job starts at batch.initial (the operator sizes the first pods from it), so a
            # schedule starting elsewhere would rescale the job at its first step.
            if steps[0][1] != self.initial:
                raise ValueError(
                    f"schedule.steps: the first batch ({steps[0][1]}) must equal initial "
                    f"({self.initial}), the batch the job starts with"
                )
            for threshold, batch in steps:
                if batch > self.max:
                    raise ValueError(
                        f"schedule.steps: batch {batch} (from {format_units(threshold)}) must "
                        f"lie in [1, max] = [1, {self.max}]"
                    )
            return
        # As Megatron-LM's ramp asserts: whole increments from initial land exactly on max.
        increment = schedule.ramp_increment(self.initial)
        span = self.max - self.initial
        if span % increment:
            default = "" if schedule.increment is not None else ", its default batch.initial"
            raise ValueError(
                f"schedule.increment ({increment}{default}) must divide max - initial "
                f"({self.max} - {self.initial} = {span}), so the ramp ends exactly at max"
            )


class LearningRate(_Spec):
    base: float = Field(0.1, gt=0.0, le=100.0, description="LR at the reference batch.")
    scaling: Literal["linear", "sqrt", "none"] = Field(
        "linear", description="How the LR follows the global batch."
    )
    reference_batch: int | None = Field(
        None, ge=1, le=1 << 24, description="Batch at which `base` applies; default batch.initial."
    )
    warmup_steps: int = Field(0, ge=0, le=10_000_000, description="Linear warm-up steps.")
    decay_epochs: list[int] = Field(
        default_factory=list, description="Epochs at which the LR is multiplied by decayFactor."
    )
    decay_factor: float = Field(0.1, gt=0.0, le=1.0, description="Step-decay multiplier.")


class NeumannSettings(_Spec):
    """Neumann optimizer (arXiv 1712.03298); the paper's defaults."""

    alpha: float = Field(1e-7, ge=0.0, le=1.0, description="Cubic regulariser weight α.")
    beta_per_param: float = Field(
        1e-5, ge=0.0, le=1.0, description="β / number of parameters (repulsive regulariser)."
    )
    gamma: float = Field(0.99, ge=0.0, lt=1.0, description="Moving-average weight γ of v.")
    sgd_warmup_epochs: int = Field(5, ge=0, le=10_000, description="Plain SGD epochs first.")
    reset_epochs: int = Field(10, ge=1, le=10_000, description="K: epochs to the first reset.")


class Optimizer(_Spec):
    name: Literal["sgd", "neumann", "lars", "lamb"] = Field("sgd", description="Optimizer.")
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="Momentum (SGD, LARS).")
    weight_decay: float = Field(0.0, ge=0.0, le=1.0, description="L2 weight decay.")
    nesterov: bool = Field(False, description="Nesterov momentum (SGD).")
    trust_coefficient: float = Field(0.001, gt=0.0, le=1.0, description="LARS trust η.")
    betas: tuple[float, float] = Field((0.9, 0.999), description="LAMB moment decays.")
    eps: float = Field(1e-6, gt=0.0, le=1.0, description="LAMB denominator epsilon.")
    neumann: NeumannSettings = NeumannSettings()


class Adversarial(_Spec):
    method: Literal["none", "fgsm", "pgd", "conadv"] = Field(
        "none", description="FGSM or PGD on a share of each batch, or ConAdv (stale weights)."
    )
    epsilon: float = Field(0.005, ge=0.0, le=1.0, description="L∞ radius (inputs in [0,1]).")
    ratio: float = Field(0.2, ge=0.0, le=1.0, description="Share of each micro-batch perturbed.")
    steps: int = Field(1, ge=1, le=1_000, description="PGD iterations.")
    step_size: float | None = Field(None, ge=0.0, le=1.0, description="PGD step; default ε.")
    random_start: bool = Field(False, description="PGD random start in the ε-ball.")
    targeted: bool = Field(False, description="Attack toward a random wrong label.")
    staleness: int = Field(1, ge=0, le=1_000, description="ConAdv τ: weight version lag.")


class Language(_Spec):
    """Causal language modelling (model gpt on a token corpus): sequences and evaluation."""

    seq_len: int = Field(
        64, ge=8, le=8192, description="Tokens per training sequence; the batch counts sequences."
    )
    eval_every_steps: int = Field(
        100, ge=1, le=10_000_000, description="Steps between validation-loss evaluations."
    )
    eval_sequences: int = Field(
        256, ge=1, le=1 << 20, description="Validation sequences per evaluation."
    )


class Checkpoint(_Spec):
    dir: str = Field("/checkpoints", min_length=1, description="Directory all replicas share.")
    volume: dict[str, Any] | None = Field(
        None, description="Volume source mounted at `dir` on every worker (e.g. a PVC)."
    )
    every_steps: int = Field(200, ge=1, le=10_000_000, description="Steps between checkpoints.")
    keep: int = Field(3, ge=2, le=100, description="Checkpoints kept (>= 2 for the fallback).")


class Metrics(_Spec):
    port: int = Field(9400, ge=1024, le=65535, description="Port of the trainer's /metrics.")


class Scaling(_Spec):
    cooldown_seconds: int = Field(60, ge=0, le=86_400, description="Least time between rescales.")
    schedule_timeout_seconds: int = Field(
        300, ge=1, le=86_400, description="Pending pods are given back after this."
    )
    metrics_source: Literal["prometheus", "direct"] = Field(
        "prometheus", description="Where the operator reads the trainers' decisions."
    )
    max_staleness_seconds: int = Field(
        120, ge=1, le=86_400, description="Older decisions are ignored."
    )


class Rendezvous(_Spec):
    backend: Literal["c10d", "etcd-v2"] = Field("c10d", description="torchrun rendezvous backend.")
    port: int = Field(29400, ge=1024, le=65535, description="c10d store port on worker-0.")
    etcd_endpoint: str | None = Field(None, description="host:port of etcd (etcd-v2 backend).")
    join_timeout_seconds: int = Field(600, ge=1, le=86_400, description="Rendezvous join timeout.")
    last_call_timeout_seconds: int = Field(
        1, ge=0, le=3_600, description="Wait for late joiners once min nodes are in."
    )
    keep_alive_interval_seconds: int = Field(2, ge=1, le=3_600, description="Heartbeat period.")
    keep_alive_max_attempts: int = Field(
        3, ge=2, le=100, description="Missed heartbeats before a node counts as gone."
    )
    max_restarts: int = Field(
        100, ge=0, le=100_000, description="torchrun --max-restarts; every scale-down uses one."
    )
    collective_timeout_seconds: int = Field(
        300, ge=10, le=86_400, description="Process-group timeout: a lost peer fails this fast."
    )

    @model_validator(mode="after")
    def _etcd_needs_endpoint(self) -> Rendezvous:
        if self.backend == "etcd-v2" and not self.etcd_endpoint:
            raise ValueError("etcdEndpoint is required when backend is 'etcd-v2'")
        return self


class JobSpec(_Spec):
    """The whole `spec` of an AdaptiveBatchJob."""

    image: str = Field("crescendo/trainer:0.1.0", min_length=1, description="Trainer image.")
    command: list[str] | None = Field(None, description="Overrides the torchrun command.")
    script: str | None = Field(
        None,
        json_schema_extra={"pattern": SCRIPT_PATH},
        description="The user's training script (a .py path in the image) that torchrun runs "
        "instead of the built-in trainer.",
    )
    module: str | None = Field(
        None,
        json_schema_extra={"pattern": MODULE_NAME},
        description="The user's training module, run as `torchrun ... -m module`.",
    )
    args: list[str] | None = Field(None, description="Overrides the trainer arguments.")
    template: dict[str, Any] = Field(
        default_factory=dict, description="Pod spec fields merged into every worker pod."
    )
    gpus_per_replica: int = Field(1, ge=0, le=16, description="nvidia.com/gpu per pod (0: CPU).")
    nproc_per_replica: int | None = Field(
        None, ge=1, le=64, description="Trainer processes per pod; default max(gpus, 1)."
    )
    replicas: Replicas = Field(Replicas(), description="How many worker pods, and their bounds.")
    batch: Batch = Field(Batch(), description="The global batch and the policy that grows it.")
    learning_rate: LearningRate = Field(
        LearningRate(), description="Base rate, its scaling with the batch, warm-up and decay."
    )
    optimizer: Optimizer = Field(Optimizer(), description="The optimizer and its settings.")
    adversarial: Adversarial = Field(
        Adversarial(), description="Adversarial training: attack, strength and share."
    )
    model: str = Field(
        "cnn",
        json_schema_extra={"pattern": MODEL_REF},
        description="cnn, mlp, gpt or module:function.",
    )
    dataset: str = Field(
        "digits",
        json_schema_extra={"pattern": DATASET_REF},
        description="digits, mnist5k, fashion-mnist, python-stdlib or module:function.",
    )
    language: Language = Field(
        Language(), description="Causal language modelling: sequence length and evaluation."
    )
    epochs: int | None = Field(None, ge=1, le=100_000, description="Training budget in epochs.")
    max_steps: int | None = Field(None, ge=1, le=100_000_000, description="Budget in steps.")
    # Megatron's --train-samples: with a growing batch a step budget means a different amount of
    # data per policy, so runs that compare policies are given the same samples (sequences).
    max_samples: int | None = Field(
        None, ge=1, le=1 << 50, description="Budget in training samples (sequences for gpt)."
    )
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Seed of model init and data order.")
    log_every_steps: int = Field(20, ge=1, le=1_000_000, description="Progress log period.")
    checkpoint: Checkpoint = Field(
        Checkpoint(), description="Where and how often the trainers checkpoint."
    )
    metrics: Metrics = Field(Metrics(), description="The trainers' Prometheus endpoint.")
    scaling: Scaling = Field(Scaling(), description="How the operator follows the decisions.")
    rendezvous: Rendezvous = Field(
        Rendezvous(), description="torchrun's elastic rendezvous and restart budget."
    )

    @field_validator("model")
    @classmethod
    def _model_ref(cls, value: str) -> str:
        if not re.match(MODEL_REF, value):
            raise ValueError(f"must be one of {', '.join(BUILTIN_MODELS)} or 'module:function'")
        return value

    @field_validator("dataset")
    @classmethod
    def _dataset_ref(cls, value: str) -> str:
        if not re.match(DATASET_REF, value):
            raise ValueError(f"must be one of {', '.join(BUILTIN_DATASETS)} or 'module:function'")
        return value

    @field_validator("script")
    @classmethod
    def _script_path(cls, value: str | None) -> str | None:
        if value is not None and not re.match(SCRIPT_PATH, value):
            raise ValueError("must be a relative or absolute path to a .py file")
        return value

    @field_validator("module")
    @classmethod
    def _module_name(cls, value: str | None) -> str | None:
        if value is not None and not re.match(MODULE_NAME, value):
            raise ValueError("must be a dotted Python module name (package.module)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> JobSpec:
        if self.epochs is None and self.max_steps is None and self.max_samples is None:
            raise ValueError("one of epochs, maxSteps or maxSamples is required")
        entrypoints = [k for k, v in (("command", self.command), ("script", self.script),
                                      ("module", self.module)) if v is not None]
        if len(entrypoints) > 1:
            raise ValueError(
                f"{' and '.join(entrypoints)} cannot be combined: set at most one of command, "
                "script or module"
            )
        language_model = self.model == "gpt"
        language_data = self.dataset in LANGUAGE_DATASETS
        if language_model and self.entrypoint_is_builtin and (
            self.adversarial.method != "none" or self.batch.policy == "absa"
        ):
            # Attacks perturb pixels in [0, 1]; tokens have no such neighbourhood.
            raise ValueError(
                "model 'gpt' cannot use adversarial training: set adversarial.method none and "
                "a batch.policy other than 'absa' (abs measures the same curvature)"
            )
        if self.entrypoint_is_builtin and language_model != language_data:
            raise ValueError(
                f"model {self.model!r} and dataset {self.dataset!r} do not fit: model gpt "
                f"trains on a token corpus ({', '.join(LANGUAGE_DATASETS)}), the other models "
                "on image data sets"
            )
        if self.batch.policy == "absa" and self.adversarial.method not in ("none", "fgsm"):
            # ABSA's share of FGSM samples is part of its method; another attack would be
            # ignored or doubled, so it is refused.
            raise ValueError(
                f"adversarial.method {self.adversarial.method!r} cannot be used with batch.policy "
                "'absa', which makes its own adversarial samples (FGSM on adversarial.ratio of "
                "each block): use none or fgsm"
            )
        return self

    @property
    def entrypoint_is_builtin(self) -> bool:
        """Whether the replicas run the built-in trainer (no command, script or module)."""
        return self.command is None and self.script is None and self.module is None

    @property
    def is_language_model(self) -> bool:
        return self.model == "gpt"

    @property
    def procs_per_replica(self) -> int:
        if self.nproc_per_replica is not None:
            return self.nproc_per_replica
        return max(self.gpus_per_replica, 1)
