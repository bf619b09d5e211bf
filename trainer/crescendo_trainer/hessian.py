"""Curvature measurements: the Hessian's top eigenvalue and its trace.

Owns the power iteration with Hessian-vector products that ABS/ABSA (Yao et al., arXiv
1810.01021; HessianFlow / PyHessian, arXiv 1912.07145) use to decide when to grow the batch, and
Hutchinson's trace estimator (Hutchinson 1990; PyHessian) for the dashboard. Also owns the two
guards every measurement needs: evaluation mode (BatchNorm statistics must not move) and the
unwrapped module (a DDP wrapper would all-reduce inside the double backward).

Every rank gets the same number. DECIDE: each rank computes on the same seeded batch (picked by
`seeded_batch`, so no data has to move) from the same seeded start vector, and then rank 0's value
is broadcast (`agree_across_ranks`). The broadcast is one scalar; it makes the decision identical
even where a GPU kernel is not bit-reproducible, and costs nothing where it is.

DECIDE, the estimator: ABSA's power iteration (`top_eigenvalue`, PyHessian's algorithm) needs the
gap λ₂/λ₁ to be small for 10 products to be accurate; on a trained MLP on digits (λ₂/λ₁ ≈ 0.8) its
relative error at 10 iterations reaches 20% for an unlucky start vector. Lanczos on the same 10
products (`lanczos_top_eigenvalue`) is within 1e-2 there. `batch.absa.method` picks; the default
is Lanczos, at the same cost in Hessian-vector products.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from crescendo_spec.model import AbsaSettings
from torch import Tensor, nn

LossFn = Callable[[Tensor, Tensor], Tensor]


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel (or any `.module` wrapper)."""
    inner = getattr(model, "module", None)
    return inner if isinstance(inner, nn.Module) else model


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Evaluation mode for the duration, then every submodule's own flag back as it was."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in flags:
            module.training = training


def seeded_batch(
    inputs: Tensor, targets: Tensor, size: int, seed: int
) -> tuple[Tensor, Tensor]:
    """`size` samples chosen by `seed` alone, so every rank picks the same ones."""
    if size < 1:
        raise ValueError(f"batch.absa.hessianBatch: must be >= 1, got {size}")
    generator = torch.Generator().manual_seed(seed)
    index = torch.randperm(inputs.shape[0], generator=generator)[: min(size, inputs.shape[0])]
    return inputs[index], targets[index]


def agree_across_ranks(value: float) -> float:
    """Rank 0's value on every rank (unchanged when not distributed)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    device = torch.device("cuda") if dist.get_backend() == "nccl" else torch.device("cpu")
    box = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(box, src=0)
    return float(box.item())


@dataclass(frozen=True)
class Eigen:
    """The result of a power iteration."""

    value: float  # λ_max estimate, ⟨Hv, v⟩ at the last iterate
    iterations: int  # Hessian-vector products spent
    converged: bool  # the relative change fell below the tolerance


def _dot(xs: Sequence[Tensor], ys: Sequence[Tensor]) -> Tensor:
    return sum((torch.sum(x * y) for x, y in zip(xs, ys, strict=True)), torch.zeros(()))


def _normalised(vs: Sequence[Tensor]) -> list[Tensor]:
    norm = torch.sqrt(_dot(vs, vs))
    return [v / (norm + 1e-12) for v in vs]


def _gradient_graph(
    model: nn.Module, loss_fn: LossFn, inputs: Tensor, targets: Tensor
) -> tuple[list[Tensor], tuple[Tensor, ...]]:
    params: list[Tensor] = [p for p in model.parameters() if p.requires_grad]
    loss = loss_fn(model(inputs), targets)
    # create_graph: the gradient itself is differentiated again for every Hv.
    grads = torch.autograd.grad(loss, params, create_graph=True)
    return params, grads


def top_eigenvalue(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: Tensor,
    targets: Tensor,
    *,
    iterations: int = 10,
    tolerance: float = 1e-2,
    seed: int = 0,
) -> Eigen:
    """The largest-magnitude eigenvalue of the loss Hessian on one batch, by power iteration.

    Defaults are ABSA's (10 iterations, relative tolerance 1e-2). The model is measured in eval
    mode and left in the mode it had; its gradients (`.grad`) are not touched.
    """
    # Power iteration (von Mises), as in PyHessian:
    #   g = ∇_w L(w; batch)                         (kept with create_graph=True)
    #   v₀ ~ N(0, I), v₀ ← v₀/‖v₀‖
    #   Hvₖ = ∇_w ⟨g, vₖ⟩                            (one Hessian-vector product, Pearlmutter)
    #   λₖ = ⟨Hvₖ, vₖ⟩ (Rayleigh quotient), vₖ₊₁ = Hvₖ/‖Hvₖ‖
    #   stop when |λₖ − λₖ₋₁| ≤ tol·|λₖ₋₁|
    # The Rayleigh quotient's error shrinks as (λ₂/λ₁)^{2k}, so a handful of products suffice
    # when the top eigenvalue is well separated (it is, for classification losses).
    if iterations < 1:
        raise ValueError(f"batch.absa.iterations: must be >= 1, got {iterations}")
    if not tolerance > 0.0:
        raise ValueError(f"batch.absa.tolerance: must be > 0, got {tolerance}")
    module = unwrap(model)
    with eval_mode(module):
        params, grads = _gradient_graph(module, loss_fn, inputs, targets)
        generator = torch.Generator().manual_seed(seed)
        v = _normalised(
            [torch.randn(p.shape, generator=generator).to(p.device, p.dtype) for p in params]
        )
        value = math.nan
        for k in range(1, iterations + 1):
            hv = torch.autograd.grad(grads, params, grad_outputs=v, retain_graph=True)
            estimate = float(_dot(hv, v))
            v = _normalised([h.detach() for h in hv])
            if k > 1 and abs(estimate - value) <= tolerance * abs(value):
                return Eigen(agree_across_ranks(estimate), k, True)
            value = estimate
    return Eigen(agree_across_ranks(value), iterations, False)


def lanczos_top_eigenvalue(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: Tensor,
    targets: Tensor,
    *,
    iterations: int = 10,
    seed: int = 0,
) -> Eigen:
    """The top eigenvalue from the same number of Hessian-vector products, by Lanczos.

    Power iteration keeps only its last vector; Lanczos keeps the Krylov basis the same products
    span and returns its largest Ritz value, whose error falls like exp(−4k·√gap) instead of
    gap^{2k}. Costs `iterations` parameter copies of memory.
    """
    # Lanczos with full re-orthogonalisation (float64 coefficients):
    #   q₁ = v₀/‖v₀‖;  for k: u = H qₖ − βₖ₋₁ qₖ₋₁, αₖ = ⟨u, qₖ⟩, u −= αₖ qₖ,
    #   u −= Σⱼ ⟨u, qⱼ⟩ qⱼ (rounding would otherwise bring back converged directions),
    #   βₖ = ‖u‖, qₖ₊₁ = u/βₖ.   T = tridiag(β, α, β);  λ_max ≈ max eig(T).
    # This is the largest (algebraic) eigenvalue, where power iteration finds the largest |λ|;
    # for a classification loss the two coincide (its outliers are positive).
    if iterations < 1:
        raise ValueError(f"batch.absa.iterations: must be >= 1, got {iterations}")
    module = unwrap(model)
    with eval_mode(module):
        params, grads = _gradient_graph(module, loss_fn, inputs, targets)
        generator = torch.Generator().manual_seed(seed)
        q = _normalised(
            [torch.randn(p.shape, generator=generator).to(p.device, p.dtype) for p in params]
        )
        basis: list[list[Tensor]] = []
        alphas: list[float] = []
        betas: list[float] = []
        for _ in range(iterations):
            basis.append(q)
            hq = torch.autograd.grad(grads, params, grad_outputs=q, retain_graph=True)
            u = [h.detach() for h in hq]
            alphas.append(float(_dot(u, q)))
            for b in basis:
                c = _dot(u, b)
                u = [x - c * y for x, y in zip(u, b, strict=True)]
            beta = float(torch.sqrt(_dot(u, u)))
            if beta < 1e-10 * max(abs(a) for a in alphas):
                break  # the Krylov space is invariant: its Ritz values are exact
            betas.append(beta)
            q = [x / beta for x in u]
    n = len(alphas)
    tri = torch.diag(torch.tensor(alphas, dtype=torch.float64))
    off = torch.tensor(betas[: n - 1], dtype=torch.float64)
    tri += torch.diag(off, 1) + torch.diag(off, -1)
    value = float(torch.linalg.eigvalsh(tri)[-1])
    return Eigen(agree_across_ranks(value), n, n < iterations)


def measure_top_eigenvalue(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: Tensor,
    targets: Tensor,
    settings: AbsaSettings,
    *,
    seed: int = 0,
) -> Eigen:
    """λ_max as `batch.absa` asks for it (method, iterations, tolerance); same on every rank."""
    if settings.method == "lanczos":
        return lanczos_top_eigenvalue(
            model, loss_fn, inputs, targets, iterations=settings.iterations, seed=seed
        )
    return top_eigenvalue(
        model,
        loss_fn,
        inputs,
        targets,
        iterations=settings.iterations,
        tolerance=settings.tolerance,
        seed=seed,
    )


def hutchinson_trace(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: Tensor,
    targets: Tensor,
    *,
    samples: int = 50,
    tolerance: float = 1e-3,
    seed: int = 0,
) -> float:
    """tr(H) of the loss Hessian on one batch, by Hutchinson's estimator (eval mode)."""
    # Hutchinson: for Rademacher z (entries ±1, E[zzᵀ] = I), E[zᵀHz] = tr(H). Average zᵀHz over
    # samples; stop early when the running mean moves by less than `tolerance` (relative).
    if samples < 1:
        raise ValueError(f"samples: must be >= 1, got {samples}")
    module = unwrap(model)
    with eval_mode(module):
        params, grads = _gradient_graph(module, loss_fn, inputs, targets)
        generator = torch.Generator().manual_seed(seed)
        total, mean = 0.0, math.nan
        for k in range(1, samples + 1):
            z = [
                (torch.randint(0, 2, p.shape, generator=generator) * 2 - 1).to(p.device, p.dtype)
                for p in params
            ]
            hz = torch.autograd.grad(grads, params, grad_outputs=z, retain_graph=True)
            total += float(_dot(hz, z))
            previous, mean = mean, total / k
            if k > 1 and abs(mean - previous) <= tolerance * abs(previous):
                break
    return agree_across_ranks(mean)
