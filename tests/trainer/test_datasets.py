"""The built-in data sets, their fixed splits, the cache, and a user's module:function."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from crescendo_trainer import datasets
from crescendo_trainer.datasets import (
    FASHION_MNIST_ROOT,
    DatasetError,
    TensorDataset,
    load_dataset,
)


def _check_contract(data: TensorDataset) -> None:
    for x, y in ((data.train_x, data.train_y), (data.test_x, data.test_y)):
        assert x.dtype == torch.float32
        assert y.dtype == torch.int64
        assert tuple(x.shape[1:]) == data.input_shape
        assert len(x) == len(y)
        assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
        assert int(y.min()) >= 0 and int(y.max()) < data.num_classes


def test_digits_has_a_stratified_1497_300_split_of_8x8_images() -> None:
    data = load_dataset("digits")

    _check_contract(data)
    assert (len(data.train_x), len(data.test_x)) == (1497, 300)
    assert data.input_shape == (1, 8, 8)
    assert data.num_classes == 10
    assert data.name == "digits"
    # Stratified: every class keeps its share (≈30 of 300) in the test set.
    assert set(torch.bincount(data.test_y).tolist()) <= {29, 30, 31}
    assert float(data.train_x.max()) == 1.0  # 16 maps to 1, so the full range is used


def test_mnist5k_has_a_balanced_4000_1000_split_of_28x28_images() -> None:
    data = load_dataset("mnist5k")

    _check_contract(data)
    assert (len(data.train_x), len(data.test_x)) == (4000, 1000)
    assert data.input_shape == (1, 28, 28)
    assert torch.bincount(data.test_y).tolist() == [100] * 10


@pytest.mark.parametrize("ref", ["digits", "mnist5k"])
def test_split_is_the_same_on_every_load(ref: str) -> None:
    first = load_dataset(ref)
    datasets._load_cached.cache_clear()

    second = load_dataset(ref)

    assert second is not first
    assert torch.equal(first.train_x, second.train_x)
    assert torch.equal(first.test_y, second.test_y)


def test_every_caller_gets_the_same_cached_object() -> None:
    assert load_dataset("digits") is load_dataset("digits", root=Path("/ignored/by/digits"))


@pytest.mark.skipif(
    not (FASHION_MNIST_ROOT / "train-images-idx3-ubyte.gz").is_file(),
    reason=f"Fashion-MNIST not installed in {FASHION_MNIST_ROOT} (apt-get install "
    "dataset-fashion-mnist)",
)
def test_fashion_mnist_loads_the_official_60000_10000_split() -> None:
    data = load_dataset("fashion-mnist")

    _check_contract(data)
    assert (len(data.train_x), len(data.test_x)) == (60_000, 10_000)
    assert data.input_shape == (1, 28, 28)
    assert torch.bincount(data.test_y).tolist() == [1000] * 10


def test_missing_fashion_mnist_names_the_field_the_directory_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as caught:
        load_dataset("fashion-mnist", root=tmp_path)

    message = str(caught.value)
    assert "spec.dataset='fashion-mnist'" in message
    assert str(tmp_path) in message
    assert "train-images-idx3-ubyte.gz" in message
    assert "apt-get install dataset-fashion-mnist" in message


def _write_idx(path: Path, magic: int, dims: tuple[int, ...], body: bytes) -> None:
    header = np.array([magic, *dims], dtype=">u4").tobytes()
    path.write_bytes(gzip.compress(header + body))


def _write_fashion(root: Path, images: np.ndarray, labels: np.ndarray, magic: int = 0x803) -> None:
    for split in ("train", "t10k"):
        _write_idx(root / f"{split}-images-idx3-ubyte.gz", magic, images.shape, images.tobytes())
        _write_idx(root / f"{split}-labels-idx1-ubyte.gz", 0x801, labels.shape, labels.tobytes())


def test_idx_files_in_root_are_parsed_into_scaled_images(tmp_path: Path) -> None:
    images = np.arange(3 * 28 * 28, dtype=np.uint32).astype(np.uint8).reshape(3, 28, 28)
    labels = np.array([0, 9, 4], dtype=np.uint8)
    _write_fashion(tmp_path, images, labels)

    data = load_dataset("fashion-mnist", root=tmp_path)

    assert data.train_x.shape == (3, 1, 28, 28)
    assert torch.equal(data.train_x[:, 0], torch.from_numpy(images).float() / 255)
    assert data.train_y.tolist() == [0, 9, 4]


def test_idx_file_with_a_wrong_magic_number_is_rejected(tmp_path: Path) -> None:
    _write_fashion(tmp_path, np.zeros((2, 28, 28), np.uint8), np.zeros(2, np.uint8), magic=0x801)

    with pytest.raises(DatasetError, match=r"IDX magic 0x00000801, expected 0x00000803"):
        load_dataset("fashion-mnist", root=tmp_path)


def test_truncated_idx_file_is_rejected(tmp_path: Path) -> None:
    _write_fashion(tmp_path, np.zeros((2, 28, 28), np.uint8), np.zeros(2, np.uint8))
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", 0x803, (2, 28, 28), bytes(100))

    with pytest.raises(DatasetError, match="holds 100 bytes"):
        load_dataset("fashion-mnist", root=tmp_path)


def test_user_function_returning_a_tensor_dataset_is_used_as_is(
    user_module: Callable[[str], str],
) -> None:
    name = user_module(
        "import torch\n"
        "from crescendo_trainer.datasets import TensorDataset\n"
        "def load():\n"
        "    return TensorDataset(\n"
        "        torch.rand(6, 3, 4, 4), torch.tensor([0, 1, 2, 0, 1, 2]),\n"
        "        torch.rand(2, 3, 4, 4), torch.tensor([2, 1]), 3, (3, 4, 4), 'x')\n"
    )

    data = load_dataset(f"{name}:load")

    assert (data.name, data.num_classes, data.input_shape) == ("x", 3, (3, 4, 4))
    assert load_dataset(f"{name}:load") is data


def test_user_function_returning_arrays_is_converted(user_module: Callable[[str], str]) -> None:
    name = user_module(
        "import numpy as np\n"
        "def load():\n"
        "    x = np.full((5, 6, 7), 0.5)\n"
        "    return x, np.array([0, 1, 4, 1, 0]), x[:2], np.array([3, 0], dtype=np.int32)\n"
    )

    data = load_dataset(f"{name}:load")

    _check_contract(data)
    assert data.input_shape == (1, 6, 7)  # N×H×W gets one channel
    assert data.num_classes == 5  # largest label + 1, over both splits
    assert data.name == f"{name}:load"


def test_user_module_that_cannot_be_imported_names_the_field() -> None:
    with pytest.raises(DatasetError, match=r"spec.dataset='no_such_module_xyz:load'.*import"):
        load_dataset("no_such_module_xyz:load")


def test_user_function_that_is_missing_names_the_field(user_module: Callable[[str], str]) -> None:
    name = user_module("def other():\n    pass\n")

    with pytest.raises(DatasetError, match=rf"spec.dataset='{name}:load'.*no attribute 'load'"):
        load_dataset(f"{name}:load")


def test_user_function_returning_the_wrong_type_names_the_field(
    user_module: Callable[[str], str],
) -> None:
    name = user_module("def load():\n    return {'x': 1}\n")

    with pytest.raises(DatasetError, match=rf"spec.dataset='{name}:load'.*got dict"):
        load_dataset(f"{name}:load")


def test_user_images_outside_0_1_are_rejected_with_the_fix(
    user_module: Callable[[str], str],
) -> None:
    name = user_module(
        "import numpy as np\n"
        "def load():\n"
        "    x = np.full((2, 1, 4, 4), 255.0)\n"
        "    return x, np.array([0, 1]), x, np.array([1, 0])\n"
    )

    with pytest.raises(DatasetError, match=r"spec.dataset=.*\[0, 1\].*divide by 255"):
        load_dataset(f"{name}:load")


def test_invalid_tensor_dataset_names_the_problem() -> None:
    with pytest.raises(DatasetError, match=r"train_y labels must lie in \[0, 2\)"):
        TensorDataset(
            torch.zeros(2, 1, 2, 2),
            torch.tensor([0, 2]),
            torch.zeros(1, 1, 2, 2),
            torch.tensor([0]),
            num_classes=2,
            input_shape=(1, 2, 2),
            name="bad",
        )


def test_unknown_builtin_lists_the_allowed_values() -> None:
    with pytest.raises(DatasetError, match=r"spec.dataset='cifar10'.*digits, mnist5k"):
        load_dataset("cifar10")
