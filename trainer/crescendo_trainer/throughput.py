"""The step-time model behind the `goodput` policy (pure: numpy, no torch).

Owns Pollux's throughput model (Qiao et al., OSDI'21, §3.2): how long one optimizer step takes
for a given world size, micro-batch and accumulation, fitted online from the measured wall times
of completed steps; the priors it falls back to where those steps cannot identify a parameter;
and its restart state (the recent observations, a few hundred numbers).
"""

from __future__ import annotations

import itertools
import math
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

# The first steps of every run in a configuration are dropped: after a restart or a rescale the
# allocator, the autotuner and the data loader's workers warm up, and those steps are several
# times slower than the steady state.
WARMUP_STEPS = 3
# Step times kept per configuration (their median is the configuration's row in the fit) and the
# configurations kept (the least recently run is forgotten first): the window is bounded.
PER_CONFIGURATION = 16
CONFIGURATIONS = 16
# Steady-state steps a configuration needs before it enters the fit: one step is noise.
MIN_SAMPLES = 3

Config = tuple[int, int, int]  # (world size, micro-batch, accumulation)
Array = npt.NDArray[np.float64]

# Parameter order of the fit, and the sets of free parameters tried, most free first: the first
# whose columns the observed configurations make independent is fitted; the others take their
# priors (see `fit`). β_g is always free: any step identifies compute at the micro-batch it ran.
PARAMETERS = ("alpha_grad", "beta_grad", "alpha_sync", "beta_sync")
_FREE_SETS: tuple[tuple[int, ...], ...] = (
    (0, 1, 2, 3),
    (0, 1, 3),  # α_s = 0: sync ∝ K − 1
    (1, 2, 3),  # α_g = 0: compute ∝ m
    (1, 3),
    (0, 1),  # sync from the prior
    (1,),
)


@dataclass(frozen=True)
class StepTimeFit:
    """Fitted seconds: T_grad(m) = α_g + β_g·m, T_sync(K) = α_s + β_s·(K − 1) for K > 1.

    `priors` names the parameters that were not identified and hold their prior instead.
    """

    alpha_grad: float
    beta_grad: float
    alpha_sync: float
    beta_sync: float
    priors: frozenset[str]

    def step_seconds(self, replicas: int, micro: int, accumulation: int) -> float:
        compute = accumulation * (self.alpha_grad + self.beta_grad * micro)
        sync = 0.0 if replicas <= 1 else self.alpha_sync + self.beta_sync * (replicas - 1)
        return compute + sync


class ThroughputModel:
    """Pollux's T_iter, fitted from `observe`d steps; `predict` says what a layout would take."""

    version = 1

    def __init__(self, sync_prior_seconds: float, procs_per_replica: int = 1) -> None:
        if procs_per_replica < 1:
            raise ValueError(f"procs_per_replica must be >= 1 (got {procs_per_replica})")
        self.sync_prior_seconds = sync_prior_seconds
        self.procs_per_replica = procs_per_replica
        self._times: OrderedDict[Config, deque[float]] = OrderedDict()
        # The current run: not restart state, so the first steps after a restart are dropped too.
        self._run: Config | None = None
        self._run_length = 0
        self._fit: StepTimeFit | None = None

    def replicas(self, world: int) -> int:
        """Replicas (pods) a world of `world` processes spans."""
        return max(1, math.ceil(world / self.procs_per_replica))

    def observe(self, world: int, micro: int, accumulation: int, seconds: float) -> bool:
        """Record one completed step; False when it is not used (warm-up or unusable values)."""
        if world < 1 or micro < 1 or accumulation < 1:
            return False
        if not math.isfinite(seconds) or seconds <= 0.0:
            return False
        config = (world, micro, accumulation)
        if config != self._run:
            self._run, self._run_length = config, 0
        self._run_length += 1
        if self._run_length <= WARMUP_STEPS:
            return False
        times = self._times.pop(config, None) or deque(maxlen=PER_CONFIGURATION)
        times.append(seconds)
        self._times[config] = times  # most recently run last
        while len(self._times) > CONFIGURATIONS:
            self._times.popitem(last=False)
        self._fit = None
        return True

    @property
    def ready(self) -> bool:
        """Whether some configuration has enough steady-state steps to fit."""
        return self.fit() is not None

    def _rows(self) -> list[tuple[int, int, int, float]]:
        """(replicas, micro, accumulation, median seconds) per usable configuration, in order."""
        return [
            (self.replicas(world), micro, accumulation, float(np.median(list(times))))
            for (world, micro, accumulation), times in sorted(self._times.items())
            if len(times) >= MIN_SAMPLES
        ]

    # Pollux §3.2 models one optimizer step on K replicas, each process running `a` micro-steps of
    # m samples, as
    #     T_iter(K, m, a) = a·T_grad(m) + T_sync(K)
    #     T_grad(m) = α_g + β_g·m                          (forward and backward of a micro-batch)
    #     T_sync(K) = 0 for K = 1, α_s + β_s·(K − 1) else   (the gradient all-reduce, once a step)
    # K counts replicas (pods), not processes: the processes per replica are a job constant, so
    # the all-reduce inside one pod is part of what the fit calls compute, and sync is what the
    # pods that join add. Pollux combines the last micro-step's compute with the sync through an
    # overlap exponent γ ≥ 1, (T_grad^γ + T_sync^γ)^(1/γ); we take γ = 1 (no overlap). The model
    # is then linear in its four parameters, the fit a least-squares problem with one answer, and
    # it can only over-state a multi-replica step (DDP overlaps part of the all-reduce with the
    # backward pass): the error leans toward fewer replicas, and every rescale costs a restart.
    #
    # Each configuration is one row: the median of its recent steady-state step times (robust to
    # the odd slow step: a checkpoint, an evaluation, a noisy neighbour). Rows are divided by their
    # time, so the fit minimises relative errors, close to AdaptDL's root-mean-square log error:
    # a 10 ms configuration counts as much as a 1 s one. Parameters are non-negative.
    #
    # Where the rows cannot tell parameters apart, priors take their place:
    # - one micro-batch size only: α_g = 0, compute ∝ m, so a larger micro-batch is never
    #   predicted to cost less per sample than the one measured;
    # - one multi-replica size only: α_s = 0, sync ∝ K − 1 through the measured point; a ring
    #   all-reduce grows slower than that, so more replicas are never predicted cheaper;
    # - no multi-replica step (or none that can be told apart from compute): T_sync(K) =
    #   syncPriorSeconds·(K − 1), but at most half of a measured multi-replica step per extra
    #   replica: with no one-replica step to tell sync from compute, a guess may not claim the
    #   whole of a step that was measured.
    def fit(self) -> StepTimeFit | None:
        """The model fitted to the kept observations, or None before any configuration is usable."""
        if self._fit is None:
            rows = self._rows()
            self._fit = _fit_rows(rows, self.sync_prior_seconds) if rows else None
        return self._fit

    def predict(self, world: int, micro: int, accumulation: int) -> float:
        """Seconds one optimizer step would take for this layout."""
        fitted = self.fit()
        if fitted is None:
            raise ValueError("no step time observed yet: check `ready` before predicting")
        return fitted.step_seconds(self.replicas(world), micro, accumulation)

    def state_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "observations": [[*config, list(times)] for config, times in self._times.items()],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("version") != self.version:
            raise ValueError(f"throughput model state version {state.get('version')} is not "
                             f"{self.version}")
        self._times = OrderedDict(
            ((int(w), int(m), int(a)), deque((float(t) for t in times), maxlen=PER_CONFIGURATION))
            for w, m, a, times in state["observations"]
        )
        self._run, self._run_length, self._fit = None, 0, None


def _fit_rows(rows: list[tuple[int, int, int, float]], sync_prior: float) -> StepTimeFit:
    k = np.array([r[0] for r in rows], dtype=np.float64)
    m = np.array([r[1] for r in rows], dtype=np.float64)
    a = np.array([r[2] for r in rows], dtype=np.float64)
    seconds = np.array([r[3] for r in rows], dtype=np.float64)
    multi = (k > 1).astype(np.float64)
    design = np.column_stack([a, a * m, multi, multi * (k - 1)])
    free = next(f for f in _FREE_SETS if np.linalg.matrix_rank(design[:, list(f)]) == len(f))
    params = np.zeros(len(PARAMETERS))
    if 3 not in free and multi.any():
        # The prior may not claim more than half of a measured multi-replica step per replica.
        sync_prior = min(sync_prior, float(np.min((seconds / (2 * (k - 1)))[k > 1])))
    if 3 not in free:
        params[3] = sync_prior
    target = seconds - design @ params  # the fixed (prior) part taken out
    weighted = design[:, free] / seconds[:, None]
    params[list(free)] = _nnls(weighted, target / seconds)
    alpha_grad, beta_grad, alpha_sync, beta_sync = (float(p) for p in params)
    priors = frozenset(name for i, name in enumerate(PARAMETERS) if i not in free)
    return StepTimeFit(alpha_grad, beta_grad, alpha_sync, beta_sync, priors)


def _nnls(design: Array, target: Array) -> Array:
    """argmin ‖design·x − target‖ over x ≥ 0, exactly: the best least-squares solution over every
    subset of columns left free, the others at their bound 0 (four columns: fifteen subsets)."""
    columns = design.shape[1]
    best, best_cost = np.zeros(columns), float(target @ target)
    for size in range(1, columns + 1):
        for subset in itertools.combinations(range(columns), size):
            sub = design[:, subset]
            if np.linalg.matrix_rank(sub) < size:
                continue
            x = np.linalg.lstsq(sub, target, rcond=None)[0]
            if np.any(x < 0.0):
                continue
            residual = sub @ x - target
            cost = float(residual @ residual)
            if cost < best_cost * (1.0 - 1e-12):
                best = np.zeros(columns)
                best[list(subset)] = x
                best_cost = cost
    return best
