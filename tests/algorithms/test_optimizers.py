"""Neumann against the Newton step (torch.linalg.solve); LARS/LAMB against torch-optimizer."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch_optimizer
from crescendo_spec.model import NeumannSettings
from crescendo_spec.model import Optimizer as OptimizerSpec
from crescendo_trainer.optim import Lamb, Lars, Neumann, build_optimizer
from crescendo_trainer.optim.neumann import regulariser, regulariser_gradient
from torch import Tensor, nn

# --- Neumann -----------------------------------------------------------------------------------


def quadratic(dim: int = 10) -> tuple[Tensor, Tensor, float, float]:
    """f(θ) = ½θᵀAθ − bᵀθ with A's spectrum spread over [0.5, 5]."""
    gen = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=gen, dtype=torch.float64))
    eigenvalues = torch.linspace(0.5, 5.0, dim, dtype=torch.float64)
    a = q @ torch.diag(eigenvalues) @ q.T
    return a, torch.randn(dim, generator=gen, dtype=torch.float64), 0.5, 5.0


def run_on_quadratic(
    optimizer_factory: Callable[[list[Tensor]], Neumann], steps: int
) -> list[float]:
    """Errors ‖(θ_k − θ_0) − z*‖ of the exported iterate, z* the Newton step from θ_0."""
    a, b, _, _ = quadratic()
    theta = torch.zeros(b.shape, dtype=torch.float64, requires_grad=True)
    newton = torch.linalg.solve(a, -(a @ theta.detach() - b))  # H z = −g
    start = theta.detach().clone()
    opt = optimizer_factory([theta])
    errors = []
    for _ in range(steps):
        opt.zero_grad()
        (0.5 * theta @ a @ theta - b @ theta).backward()  # type: ignore[no-untyped-call]
        opt.step()
        with opt.exported_weights():
            errors.append(float(torch.linalg.vector_norm(theta.detach() - start - newton)))
    return errors


def test_neumann_iterate_converges_to_newton_step_at_rate_one_minus_eta_lambda_min() -> None:
    # With μ = 0 and the regulariser off, the exported iterate after k steps is the k-term
    # Neumann sum −η Σⱼ (I − ηH)ʲ g, so its distance to −H⁻¹g shrinks by exactly (1 − ηλ_min).
    _, _, lam_min, lam_max = quadratic()
    eta = 0.1
    assert eta < 1 / lam_max
    errors = run_on_quadratic(
        lambda p: Neumann(p, eta, alpha=0.0, beta_per_param=0.0, sgd_warmup_epochs=0, momentum=0.0),
        300,
    )
    rate = 1 - eta * lam_min
    assert errors[-1] / errors[-2] == pytest.approx(rate, abs=1e-6)
    initial = float(torch.linalg.vector_norm(torch.linalg.solve(*quadratic()[:2])))
    for k, e in enumerate(errors, start=1):
        assert e <= initial * rate**k * (1 + 1e-9)
    assert errors[-1] < 1e-6


def test_neumann_with_momentum_schedule_converges_at_least_as_fast() -> None:
    _, _, lam_min, _ = quadratic()
    eta = 0.1

    def factory(p: list[Tensor]) -> Neumann:
        opt = Neumann(p, eta, alpha=0.0, beta_per_param=0.0, sgd_warmup_epochs=0)
        opt.set_epoch(8)  # μ = 1 − 1/(1 + 9) = 0.9, the schedule's ceiling
        return opt

    errors = run_on_quadratic(factory, 200)
    initial = float(torch.linalg.vector_norm(torch.linalg.solve(*quadratic()[:2])))
    assert errors[-1] <= initial * (1 - eta * lam_min) ** 200


def test_momentum_schedule_in_epochs() -> None:
    p = [torch.zeros(3, requires_grad=True)]
    opt = Neumann(p, 0.1, sgd_warmup_epochs=5)
    values = []
    for epoch in (5, 6, 7, 13, 40):
        opt.set_epoch(epoch)
        values.append(opt.mu())
    assert values == pytest.approx([0.5, 1 - 1 / 3, 0.75, 0.9, 0.9])


def test_regulariser_gradient_equals_autograd() -> None:
    gen = torch.Generator().manual_seed(0)
    w = [
        torch.randn(4, 3, generator=gen, dtype=torch.float64, requires_grad=True),
        torch.randn(5, generator=gen, dtype=torch.float64, requires_grad=True),
    ]
    v = [
        torch.randn(4, 3, generator=gen, dtype=torch.float64),
        torch.randn(5, generator=gen, dtype=torch.float64),
    ]
    alpha, beta = 0.3, 0.7
    value = regulariser([a - b for a, b in zip(w, v, strict=True)], alpha, beta)
    expected = torch.autograd.grad(value, w)
    ours = regulariser_gradient([(a - b).detach() for a, b in zip(w, v, strict=True)], alpha, beta)
    for e, o in zip(expected, ours, strict=True):
        torch.testing.assert_close(o, e, rtol=1e-12, atol=1e-12)


def test_regulariser_is_zero_where_w_equals_v() -> None:
    out = regulariser_gradient([torch.zeros(3)], 1e-7, 1.0)
    assert torch.equal(out[0], torch.zeros(3))


def test_neumann_one_backward_per_step_and_no_second_order_autograd(
    monkeypatch: pytest.MonkeyPatch, digits: tuple[Tensor, Tensor]
) -> None:
    calls: dict[str, list[Any]] = {"backward": [], "grad": []}
    real_backward, real_grad = torch.autograd.backward, torch.autograd.grad

    def backward(*args: Any, **kwargs: Any) -> Any:
        calls["backward"].append(kwargs.get("create_graph", False))
        return real_backward(*args, **kwargs)

    def grad(*args: Any, **kwargs: Any) -> Any:
        calls["grad"].append(kwargs.get("create_graph", False))
        return real_grad(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "backward", backward)
    monkeypatch.setattr(torch.autograd, "grad", grad)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
    spec = OptimizerSpec(
        name="neumann", neumann=NeumannSettings(sgd_warmup_epochs=1, reset_epochs=1)
    )
    opt = build_optimizer(spec, model.parameters(), 0.05)
    assert isinstance(opt, Neumann)
    x, y = digits
    steps = 0
    for epoch in range(3):  # warm-up epoch, a reset, then Neumann steps
        opt.set_epoch(epoch)
        for i in range(0, 256, 64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[i : i + 64]), y[i : i + 64]).backward()  # type: ignore[no-untyped-call]
            opt.step()
            steps += 1
    assert len(calls["backward"]) == steps and not any(calls["backward"])
    assert calls["grad"] == []


def test_neumann_state_dict_round_trip_continues_identically() -> None:
    a, b, _, _ = quadratic()

    def step(theta: Tensor, opt: Neumann) -> None:
        opt.zero_grad()
        (0.5 * theta @ a @ theta - b @ theta).backward()  # type: ignore[no-untyped-call]
        opt.step()

    theta = torch.zeros(b.shape, dtype=torch.float64, requires_grad=True)
    opt = Neumann([theta], 0.1, sgd_warmup_epochs=0, reset_epochs=1)
    for epoch in range(3):
        opt.set_epoch(epoch)
        step(theta, opt)
    twin = theta.detach().clone().requires_grad_(True)
    opt2 = Neumann([twin], 0.1, sgd_warmup_epochs=0, reset_epochs=1)
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))
    for _ in range(3):
        step(theta, opt)
        step(twin, opt2)
    assert torch.equal(theta, twin)


def test_neumann_rejects_bad_hyper_parameters_naming_the_field() -> None:
    p = [torch.zeros(2, requires_grad=True)]
    with pytest.raises(ValueError, match=r"optimizer\.neumann\.gamma"):
        Neumann(p, 0.1, gamma=1.0)
    with pytest.raises(ValueError, match=r"optimizer\.neumann\.alpha"):
        Neumann(p, 0.1, alpha=-1.0)
    with pytest.raises(ValueError, match=r"learningRate\.base"):
        Neumann(p, 0.0)
    frozen = torch.zeros(2)  # a parameter without gradients
    with pytest.raises(ValueError, match=r"optimizer\.name: neumann needs a gradient"):
        Neumann([p[0], frozen], 0.1)
    opt = Neumann(p, 0.1)
    with pytest.raises(ValueError, match="has no gradient"):
        opt.step()


# --- LARS and LAMB -----------------------------------------------------------------------------


def bn_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 64, 10),
    )


def train_pair(
    ours: Callable[[nn.Module], torch.optim.Optimizer],
    theirs: Callable[[nn.Module], torch.optim.Optimizer],
    digits: tuple[Tensor, Tensor],
    steps: int = 20,
) -> float:
    torch.manual_seed(0)
    model = bn_cnn()
    twin = copy.deepcopy(model)
    opt_a, opt_b = ours(model), theirs(twin)
    x, y = digits
    for i in range(steps):
        xs, ys = x[i * 32 : (i + 1) * 32], y[i * 32 : (i + 1) * 32]
        for m, opt in ((model, opt_a), (twin, opt_b)):
            opt.zero_grad()
            nn.functional.cross_entropy(m(xs), ys).backward()  # type: ignore[no-untyped-call]
            opt.step()
    return max(
        float((a - b).abs().max())
        for a, b in zip(model.parameters(), twin.parameters(), strict=True)
    )


def test_lars_equals_torch_optimizer_with_bn_and_bias_excluded(
    digits: tuple[Tensor, Tensor],
) -> None:
    spec = OptimizerSpec(name="lars", momentum=0.9, weight_decay=5e-4, trust_coefficient=0.001)

    def theirs(m: nn.Module) -> torch.optim.Optimizer:
        groups = [
            {"params": [p for p in m.parameters() if p.ndim > 1], "weight_decay": 5e-4},
            {"params": [p for p in m.parameters() if p.ndim <= 1], "weight_decay": 0.0},
        ]
        return torch_optimizer.LARS(groups, lr=2.0, momentum=0.9, trust_coefficient=0.001, eps=1e-8)

    diff = train_pair(lambda m: build_optimizer(spec, m.parameters(), 2.0), theirs, digits)
    assert diff <= 1e-6


def test_lars_scales_weights_but_not_bn_or_bias() -> None:
    model = bn_cnn()
    opt = build_optimizer(OptimizerSpec(name="lars"), model.parameters(), 0.1)
    assert isinstance(opt, Lars)
    scaled, excluded = opt.param_groups
    assert scaled["lars"] and not excluded["lars"] and excluded["weight_decay"] == 0.0
    assert {id(p) for p in excluded["params"]} == {id(p) for p in model.parameters() if p.ndim <= 1}


def test_lamb_equals_torch_optimizer_without_debias(digits: tuple[Tensor, Tensor]) -> None:
    spec = OptimizerSpec(name="lamb", betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01)

    def theirs(m: nn.Module) -> torch.optim.Optimizer:
        # clamp_value: torch-optimizer clamps ‖w‖ at 10 by default; the formula has no clamp.
        return torch_optimizer.Lamb(
            m.parameters(),
            lr=0.01,
            betas=(0.9, 0.999),
            eps=1e-6,
            weight_decay=0.01,
            debias=False,
            clamp_value=1e9,
        )

    diff = train_pair(lambda m: build_optimizer(spec, m.parameters(), 0.01), theirs, digits)
    assert diff <= 1e-6


def test_build_optimizer_selects_by_name() -> None:
    model = bn_cnn()
    kinds = {
        "sgd": torch.optim.SGD,
        "neumann": Neumann,
        "lars": Lars,
        "lamb": Lamb,
    }
    for name, kind in kinds.items():
        assert isinstance(build_optimizer(OptimizerSpec(name=name), model.parameters(), 0.1), kind)


def test_unknown_optimizer_names_the_field() -> None:
    # bypasses the spec's own enum check, and so, on purpose, the Literal type of `name`
    bogus = OptimizerSpec.model_construct(name="adamw")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"optimizer\.name: 'adamw'"):
        build_optimizer(bogus, bn_cnn().parameters(), 0.1)


def test_lars_and_lamb_reject_bad_hyper_parameters() -> None:
    p = [torch.zeros(2, requires_grad=True)]
    with pytest.raises(ValueError, match=r"optimizer\.trustCoefficient"):
        Lars(p, 0.1, trust_coefficient=0.0)
    with pytest.raises(ValueError, match=r"optimizer\.betas\[1\]"):
        Lamb(p, 0.1, betas=(0.9, 1.0))
