"""The language-modelling pieces: the stdlib token corpus and its cache, its windows, the GPT."""

from __future__ import annotations

import json
import math
import os
import pickle
import sys
import threading
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
from crescendo_trainer.datasets import DatasetError
from crescendo_trainer.text import (
    VAL_FRACTION,
    GptConfig,
    TokenCorpus,
    TokenWindows,
    build_gpt,
    evaluate_lm,
    identity_collate,
    list_sources,
    lm_loss,
    lm_loss_sums,
    load_python_stdlib,
    write_token_file,
)
from crescendo_trainer.text.corpus import corpus_paths, file_digest, stdlib_root
from crescendo_trainer.text.gpt import CausalSelfAttention, Mlp
from torch.utils.data import DataLoader, RandomSampler

SEQ = 16  # short windows keep each GPT test well under a second


@pytest.fixture(scope="module")
def stdlib_corpus(tmp_path_factory: pytest.TempPathFactory) -> TokenCorpus:
    return load_python_stdlib(tmp_path_factory.mktemp("cache"))


def _counting_file(path: Path, tokens: int) -> Path:
    """A token file whose token i is i mod 256, so a window shows where it was read."""
    write_token_file(path, [(np.arange(tokens) % 256).astype(np.uint8)])
    return path


def _two_split_file(path: Path, train: int, val: int) -> TokenCorpus:
    """A corpus whose train tokens are all 0 and whose validation tokens are all 1."""
    write_token_file(path, [np.zeros(train, np.uint8), np.ones(val, np.uint8)])
    return TokenCorpus(path, train_tokens=train, val_tokens=val)


# --- the corpus and its cache -------------------------------------------------------------


def test_sources_are_sorted_stdlib_files_without_installed_packages_or_test_suites() -> None:
    root = stdlib_root()
    sources = list_sources(root)
    relative = [source.relative_to(root).as_posix() for source in sources]

    assert "os.py" in relative and "json/__init__.py" in relative
    assert relative == sorted(relative)
    assert all(path.endswith(".py") for path in relative)
    for excluded in ("site-packages", "test", "tests", "idlelib", "__pycache__"):
        assert not any(excluded in path.split("/")[:-1] for path in relative), excluded


def test_token_file_is_the_sorted_sources_concatenated(stdlib_corpus: TokenCorpus) -> None:
    sources = list_sources(stdlib_root())
    tokens = np.memmap(stdlib_corpus.path, dtype=np.uint8, mode="r")
    first, last = sources[0].read_bytes(), sources[-1].read_bytes()

    assert len(tokens) == sum(source.stat().st_size for source in sources)
    assert tokens[: len(first)].tobytes() == first
    assert tokens[len(tokens) - len(last) :].tobytes() == last
    assert stdlib_corpus.vocab_size == 256


def test_split_keeps_the_last_two_percent_for_validation(stdlib_corpus: TokenCorpus) -> None:
    total = stdlib_corpus.train_tokens + stdlib_corpus.val_tokens

    assert total == stdlib_corpus.path.stat().st_size
    assert stdlib_corpus.val_tokens == round(total * VAL_FRACTION)


def test_sidecar_names_this_python_and_the_token_files_digest(
    stdlib_corpus: TokenCorpus,
) -> None:
    _, sidecar_path = corpus_paths(stdlib_corpus.path.parent)
    sidecar = json.loads(sidecar_path.read_text())

    assert sidecar["sha256"] == file_digest(stdlib_corpus.path)
    assert sidecar["python"] == sys.version
    assert sidecar["tokens"] == stdlib_corpus.path.stat().st_size
    assert sidecar["split"] == stdlib_corpus.train_tokens


def test_token_file_is_built_once_and_reused(tmp_path: Path) -> None:
    first = load_python_stdlib(tmp_path)
    token_path, sidecar_path = corpus_paths(tmp_path)
    before = [(p.stat().st_ino, p.stat().st_mtime_ns) for p in (token_path, sidecar_path)]

    second = load_python_stdlib(tmp_path)

    assert second == first
    assert [(p.stat().st_ino, p.stat().st_mtime_ns) for p in (token_path, sidecar_path)] == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [token_path.name, sidecar_path.name]
    )


@pytest.mark.parametrize("damage", ["truncated", "byte flipped", "sidecar missing"])
def test_damaged_token_file_is_rebuilt_not_used(tmp_path: Path, damage: str) -> None:
    good = load_python_stdlib(tmp_path)
    digest = file_digest(good.path)
    token_path, sidecar_path = corpus_paths(tmp_path)
    if damage == "truncated":
        os.truncate(token_path, token_path.stat().st_size // 2)
    elif damage == "byte flipped":
        with token_path.open("r+b") as handle:
            handle.seek(1000)
            byte = handle.read(1)
            handle.seek(1000)
            handle.write(bytes([byte[0] ^ 0xFF]))
    else:
        sidecar_path.unlink()

    rebuilt = load_python_stdlib(tmp_path)

    assert rebuilt == good
    assert file_digest(token_path) == digest
    assert json.loads(sidecar_path.read_text())["sha256"] == digest


def test_racing_builders_all_end_with_the_same_good_file(tmp_path: Path) -> None:
    # Threads race through the same mkstemp/os.replace calls that processes would.
    barrier, results = threading.Barrier(4), list[TokenCorpus]()

    def build() -> None:
        barrier.wait()
        results.append(load_python_stdlib(tmp_path))

    threads = [threading.Thread(target=build) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(results) == 4 and len(set(results)) == 1
    _, sidecar_path = corpus_paths(tmp_path)
    assert json.loads(sidecar_path.read_text())["sha256"] == file_digest(results[0].path)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_unwritable_cache_raises_a_dataset_error_naming_the_field(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")  # root can write anywhere, but not below a file

    with pytest.raises(DatasetError, match=r"spec\.dataset='python-stdlib'.*CRESCENDO_DATA_CACHE"):
        load_python_stdlib(blocker / "cache")


def test_missing_stdlib_sources_raise_a_dataset_error_naming_the_field(tmp_path: Path) -> None:
    (tmp_path / "stdlib" / "site-packages").mkdir(parents=True)
    (tmp_path / "stdlib" / "site-packages" / "third_party.py").write_text("x = 1\n")

    with pytest.raises(DatasetError, match=r"spec\.dataset='python-stdlib'.*no \.py sources"):
        load_python_stdlib(tmp_path / "cache", stdlib=tmp_path / "stdlib")


# --- windows --------------------------------------------------------------------------------


def test_window_targets_are_the_inputs_shifted_by_one(tmp_path: Path) -> None:
    windows = TokenWindows(_counting_file(tmp_path / "t.u8", 1000), 100, 900, seq_len=SEQ)

    assert len(windows) == (800 - 1) // SEQ
    for index in (0, 7, len(windows) - 1):
        x, y = windows[index]
        begin = 100 + index * SEQ
        expected = torch.arange(begin, begin + SEQ + 1) % 256
        assert x.dtype == y.dtype == torch.int64
        assert x.shape == y.shape == (SEQ,)
        assert torch.equal(x, expected[:-1]) and torch.equal(y, expected[1:])


def test_windows_never_read_the_other_split(tmp_path: Path) -> None:
    corpus = _two_split_file(tmp_path / "t.u8", train=1000, val=300)
    train, val = corpus.train_windows(SEQ), corpus.val_windows(SEQ)

    assert (len(train), len(val)) == ((1000 - 1) // SEQ, (300 - 1) // SEQ)
    x, y = train.__getitems__(list(range(len(train))))
    assert int(x.max()) == int(y.max()) == 0
    x, y = val.__getitems__(list(range(len(val))))
    assert int(x.min()) == int(y.min()) == 1


def test_getitems_is_the_stack_of_getitem(tmp_path: Path) -> None:
    windows = TokenWindows(_counting_file(tmp_path / "t.u8", 5000), 0, 5000, seq_len=SEQ)
    indices = [5, 0, 200, 5, len(windows) - 1]

    x, y = windows.__getitems__(indices)

    assert x.shape == y.shape == (len(indices), SEQ)
    assert x.is_contiguous() and y.is_contiguous()
    assert torch.equal(x, torch.stack([windows[i][0] for i in indices]))
    assert torch.equal(y, torch.stack([windows[i][1] for i in indices]))


def test_windows_outside_the_split_raise_index_error(tmp_path: Path) -> None:
    windows = TokenWindows(_counting_file(tmp_path / "t.u8", 500), 0, 500, seq_len=SEQ)

    for bad in (-1, len(windows)):
        with pytest.raises(IndexError):
            windows[bad]
        with pytest.raises(IndexError):
            windows.__getitems__([0, bad])


def test_split_shorter_than_one_window_names_seq_len(tmp_path: Path) -> None:
    path = _counting_file(tmp_path / "t.u8", 100)

    with pytest.raises(DatasetError, match=r"spec\.language\.seqLen=100"):
        TokenWindows(path, 0, 100, seq_len=100)


def test_pickled_windows_carry_the_path_not_the_tokens(tmp_path: Path) -> None:
    windows = TokenWindows(_counting_file(tmp_path / "t.u8", 1 << 20), 0, 1 << 20, seq_len=SEQ)
    windows[3]  # maps the file in this process

    payload = pickle.dumps(windows)
    restored = pickle.loads(payload)

    assert len(payload) < 1000
    assert torch.equal(restored[3][0], windows[3][0])


@pytest.mark.parametrize(
    "context",
    ["fork", pytest.param("forkserver", marks=pytest.mark.slow)],  # 1.5-4 s: imports torch
)
def test_windows_load_in_two_dataloader_workers(tmp_path: Path, context: str) -> None:
    # forkserver pickles the dataset into each worker; fork shares the parent's map.
    windows = TokenWindows(_counting_file(tmp_path / "t.u8", 20_000), 0, 20_000, seq_len=SEQ)
    windows[0]
    loader = DataLoader(
        windows,
        batch_size=8,
        shuffle=True,
        num_workers=2,
        collate_fn=identity_collate,
        multiprocessing_context=context,
    )

    batches = list(loader)

    assert len(batches) == math.ceil(len(windows) / 8)
    firsts = torch.cat([x[:, 0] for x, _ in batches])
    # Every window once, each starting where its index says.
    starts = torch.arange(len(windows)) * SEQ % 256
    assert torch.equal(firsts.sort().values, starts.sort().values)
    assert all(torch.equal(y[:, :-1], x[:, 1:]) for x, y in batches)


# --- the GPT --------------------------------------------------------------------------------


def test_changing_a_token_changes_no_earlier_logit() -> None:
    torch.manual_seed(0)
    model = build_gpt(SEQ).eval()
    idx = torch.randint(0, 256, (2, SEQ))
    changed = idx.clone()
    changed[:, 9] = (changed[:, 9] + 1) % 256

    with torch.no_grad():
        before, after = model(idx), model(changed)

    assert before.shape == (2, SEQ, 256)
    torch.testing.assert_close(before[:, :9], after[:, :9])
    assert not torch.allclose(before[:, 9:], after[:, 9:])


def test_initial_loss_is_near_uniform_over_256_bytes() -> None:
    torch.manual_seed(0)
    idx = torch.randint(0, 256, (8, SEQ + 1))

    loss = lm_loss(build_gpt(SEQ)(idx[:, :-1]), idx[:, 1:])

    assert abs(loss.item() - math.log(256)) < 0.1 * math.log(256)


def test_a_few_adamw_steps_on_one_window_lower_its_loss() -> None:
    torch.manual_seed(0)
    model = build_gpt(SEQ)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    idx = torch.randint(0, 256, (4, SEQ + 1))
    losses = []
    for _ in range(10):
        loss = lm_loss(model(idx[:, :-1]), idx[:, 1:])
        optimizer.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        losses.append(loss.item())

    assert losses[-1] < 0.8 * losses[0]


def test_head_is_tied_to_the_token_embedding_and_there_is_no_batchnorm() -> None:
    model = build_gpt(SEQ)

    assert model.head.weight is model.tokens.weight
    names = [name for name, _ in model.named_parameters()]
    assert "head.weight" not in names and "tokens.weight" in names
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())


def test_residual_projections_start_smaller_than_the_other_weights() -> None:
    torch.manual_seed(0)
    model = build_gpt(SEQ)
    layers = model.config.layers

    projections = [m.proj for m in model.modules() if isinstance(m, CausalSelfAttention | Mlp)]
    assert len(projections) == 2 * layers
    for projection in projections:
        assert projection.weight.std().item() == pytest.approx(
            0.02 / math.sqrt(2 * layers), rel=0.05
        )
    assert model.positions.weight.std().item() == pytest.approx(0.02, rel=0.05)


def test_config_and_forward_reject_bad_shapes() -> None:
    with pytest.raises(ValueError, match="width=100 must be a multiple of heads=3"):
        GptConfig(seq_len=SEQ, width=100, heads=3)
    with pytest.raises(ValueError, match="longer than seq_len=16"):
        build_gpt(SEQ)(torch.zeros(1, SEQ + 1, dtype=torch.int64))


def test_rank_stripes_sum_to_the_single_process_score(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_gpt(SEQ)
    windows = TokenWindows(_counting_file(tmp_path / "t.u8", 4000), 0, 4000, seq_len=SEQ)
    cpu = torch.device("cpu")

    whole, tokens = lm_loss_sums(model, windows, 50, cpu, batch=16)
    stripes = [lm_loss_sums(model, windows, 50, cpu, batch=7, rank=r, world=3) for r in range(3)]

    assert tokens == 50 * SEQ and sum(t for _, t in stripes) == tokens
    assert sum(s for s, _ in stripes) == pytest.approx(whole, rel=1e-6)
    loss, perplexity = evaluate_lm(model, windows, 50, cpu)
    assert loss == pytest.approx(whole / tokens, rel=1e-6)
    assert perplexity == pytest.approx(math.exp(loss))
    assert evaluate_lm(model, windows, 50, cpu) == (loss, perplexity)  # the same windows


def test_evaluation_restores_the_mode_and_scores_at_most_the_split(tmp_path: Path) -> None:
    model = build_gpt(SEQ)
    windows = TokenWindows(_counting_file(tmp_path / "t.u8", 200), 0, 200, seq_len=SEQ)
    cpu = torch.device("cpu")

    _, tokens = lm_loss_sums(model.train(), windows, 10_000, cpu)
    assert model.training and tokens == len(windows) * SEQ
    lm_loss_sums(model.eval(), windows, 1, cpu)
    assert not model.training


# --- lazy data ------------------------------------------------------------------------------

_BIG_FILE_BYTES = 256 << 20
_ALLOWED_GROWTH_BYTES = 64 << 20  # the file is 4× this


def _private_resident_bytes() -> int:
    # RSS minus its file-backed part (psutil's `shared`: mapped file and shmem pages). Mapped
    # token pages count in RSS, but they are clean page cache shared with every process and
    # dropped under pressure, not the process's own memory; on this 6.18 kernel the page
    # cache's large folios are mapped whole, so the 30 steps below (960 random 65-byte windows
    # of a freshly written 256 MiB file) grew RSS by 259-270 MiB and private memory by 3-14 MiB
    # over three runs. A data set that read the file into memory grew private memory 270 MiB.
    info = psutil.Process().memory_info()
    return int(info.rss - info.shared)


@pytest.mark.slow  # 3 s on two idle cores, 11 s on busy ones: 256 MiB written, 32 steps
def test_training_streams_a_token_file_four_times_larger_than_its_memory_growth(
    tmp_path: Path,
) -> None:
    path = tmp_path / "big.u8"
    rng = np.random.default_rng(0)
    write_token_file(path, (rng.bytes(16 << 20) for _ in range(_BIG_FILE_BYTES >> 24)))
    try:
        torch.manual_seed(0)
        model = build_gpt(64)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

        def step(x: torch.Tensor, y: torch.Tensor) -> float:
            loss = lm_loss(model(x), y)
            optimizer.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            return loss.item()

        # Two warm-up steps on in-memory tokens: the first creates AdamW's state, the second
        # the allocator's pools for a step that has state (measured: +34 MiB, +37 MiB, then
        # flat). The baseline comes before the file is touched at all, so a data set that read
        # it whole, at construction or on first access, would show here.
        warm = torch.randint(0, 256, (32, 65))
        step(warm[:, :-1], warm[:, 1:])
        step(warm[:, :-1], warm[:, 1:])
        before = _private_resident_bytes()
        windows = TokenWindows(path, 0, _BIG_FILE_BYTES, seq_len=64)
        # Drawn with replacement, 32 at a time: a randperm of all 4 M windows would itself
        # take 32 MiB.
        sampler = RandomSampler(windows, replacement=True, num_samples=32 * 30)
        loader = DataLoader(windows, batch_size=32, sampler=sampler, collate_fn=identity_collate)
        losses = [step(x, y) for x, y in loader]
        growth = _private_resident_bytes() - before

        assert len(losses) == 30
        assert path.stat().st_size >= 4 * _ALLOWED_GROWTH_BYTES
        assert growth <= _ALLOWED_GROWTH_BYTES, f"private RSS grew {growth / 2**20:.1f} MiB"
        assert all(math.isfinite(loss) for loss in losses)
    finally:
        path.unlink()
