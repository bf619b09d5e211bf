"""The built-in models, a user's module:function model, and that the cnn actually learns."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import torch
from crescendo_trainer.datasets import load_dataset
from crescendo_trainer.models import ModelError, build_model
from torch import nn


@pytest.mark.parametrize("ref", ["cnn", "mlp"])
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 5, 7), (1, 1, 1)])
def test_builtin_model_maps_a_batch_to_one_logit_per_class(
    ref: str, shape: tuple[int, int, int]
) -> None:
    model = build_model(ref, shape, 7)

    assert model(torch.rand(4, *shape)).shape == (4, 7)


def test_cnn_has_batchnorm_and_mlp_has_none() -> None:
    def has_batchnorm(model: nn.Module) -> bool:
        return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())

    assert has_batchnorm(build_model("cnn", (1, 8, 8), 10))
    assert not has_batchnorm(build_model("mlp", (1, 8, 8), 10))


def test_same_seed_builds_the_same_weights_on_every_rank() -> None:
    def weights() -> list[torch.Tensor]:
        torch.manual_seed(3)
        return list(build_model("cnn", (1, 28, 28), 10).state_dict().values())

    assert all(torch.equal(a, b) for a, b in zip(weights(), weights(), strict=True))


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Train on one thread: two OpenMP threads on 2 cores shared with other test processes spin
    against each other (a 0.2 s run took 27 s); one thread keeps the run short under load."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _test_accuracy_after_three_epochs(ref: str, lr: float) -> float:
    """Plain SGD with momentum, batch 32, seed 0; the test split's accuracy afterwards."""
    data = load_dataset("digits")
    torch.manual_seed(0)
    model = build_model(ref, data.input_shape, data.num_classes)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    order = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(3):
        for index in torch.randperm(len(data.train_x), generator=order).split(32):  # type: ignore[no-untyped-call]
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(data.train_x[index]), data.train_y[index])
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
    model.eval()
    with torch.no_grad():
        predicted = model(data.test_x).argmax(dim=1)
    return float((predicted == data.test_y).float().mean())


# Seeds 0-4 gave 97.7-98.7% (cnn, lr 0.01) and 93.7-97.0% (mlp, lr 0.1) on the 300 test images.
@pytest.mark.usefixtures("one_thread")
def test_cnn_reaches_95_percent_on_digits_in_three_epochs_of_sgd() -> None:
    assert _test_accuracy_after_three_epochs("cnn", lr=0.01) >= 0.95


@pytest.mark.usefixtures("one_thread")
def test_mlp_reaches_90_percent_on_digits_in_three_epochs_of_sgd() -> None:
    assert _test_accuracy_after_three_epochs("mlp", lr=0.1) >= 0.90


def test_user_function_is_called_with_input_shape_and_num_classes(
    user_module: Callable[[str], str],
) -> None:
    name = user_module(
        "import math\n"
        "from torch import nn\n"
        "def build(input_shape, num_classes):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), num_classes))\n"
    )

    model = build_model(f"{name}:build", (2, 3, 4), 5)

    assert model(torch.rand(1, 2, 3, 4)).shape == (1, 5)


def test_user_module_that_cannot_be_imported_names_the_field() -> None:
    with pytest.raises(ModelError, match=r"spec.model='no_such_module_xyz:build'.*import"):
        build_model("no_such_module_xyz:build", (1, 8, 8), 10)


def test_user_function_that_is_missing_names_the_field(user_module: Callable[[str], str]) -> None:
    name = user_module("BUILD = 1\n")

    with pytest.raises(ModelError, match=rf"spec.model='{name}:build'.*no attribute 'build'"):
        build_model(f"{name}:build", (1, 8, 8), 10)


def test_user_attribute_that_is_not_callable_names_the_field(
    user_module: Callable[[str], str],
) -> None:
    name = user_module("BUILD = 1\n")

    with pytest.raises(ModelError, match=rf"spec.model='{name}:BUILD'.*not callable"):
        build_model(f"{name}:BUILD", (1, 8, 8), 10)


def test_user_function_returning_no_module_names_the_field(
    user_module: Callable[[str], str],
) -> None:
    name = user_module("def build(input_shape, num_classes):\n    return 'a model'\n")

    with pytest.raises(ModelError, match=rf"spec.model='{name}:build'.*got str"):
        build_model(f"{name}:build", (1, 8, 8), 10)


def test_unknown_builtin_lists_the_allowed_values() -> None:
    with pytest.raises(ModelError, match=r"spec.model='resnet50'.*cnn, mlp"):
        build_model("resnet50", (1, 8, 8), 10)


def test_fewer_than_two_classes_is_rejected() -> None:
    with pytest.raises(ModelError, match=r"num_classes must be >= 2"):
        build_model("mlp", (1, 8, 8), 1)
