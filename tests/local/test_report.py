"""The end-of-run summary and plot, from synthetic traces: classification and language models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from crescendo_operator.local.report import (
    measure_panel,
    plot,
    quality_panel,
    summarize,
    summary_table,
)
from rich.console import Console


def _step(step: int, batch: int, **extra: Any) -> dict[str, Any]:
    return {"kind": "step", "time": float(step), "step": step, "epoch": 0, "world": 1,
            "batch": batch, "accumulation": 1, "loss": 2.0 / step, "lr": step / 100,
            "seconds": 0.1, **extra}


def classification_trace() -> list[dict[str, Any]]:
    return [
        _step(1, 32), _step(2, 32),
        {"kind": "eval", "time": 2.5, "step": 2, "epoch": 0, "accuracy": 0.5},
        _step(3, 64),
        {"kind": "eval", "time": 3.5, "step": 3, "epoch": 0, "accuracy": 0.75},
        {"kind": "done", "time": 4.0, "step": 3, "accuracy": 0.8125},
    ]


def language_trace() -> list[dict[str, Any]]:
    return [
        _step(1, 32), _step(2, 32),
        {"kind": "eval", "time": 2.5, "step": 2, "epoch": 0, "val_loss": 3.5, "perplexity": 33.1},
        _step(3, 64),
        {"kind": "eval", "time": 3.5, "step": 3, "epoch": 0, "val_loss": 2.25,
         "perplexity": 9.4877},
        {"kind": "done", "time": 4.0, "step": 3, "val_loss": 2.0, "perplexity": 7.389},
    ]


def rows(records: list[dict[str, Any]], tokens_per_sample: int | None = None) -> dict[str, str]:
    """The summary table as {label: value}, the text a user reads."""
    console = Console(width=200, record=True)
    table = summary_table(summarize(records, 12.0, tokens_per_sample))
    labels, values = (list(c.cells) for c in table.columns)
    console.print(table)  # it renders
    return {str(label): str(value) for label, value in zip(labels, values, strict=True)}


def test_language_model_summary_shows_validation_loss_perplexity_and_tokens() -> None:
    summary = rows(language_trace(), tokens_per_sample=64)
    assert summary["final validation loss"] == "2.0000"
    assert summary["final perplexity"] == "7.39"
    assert summary["final global batch"] == "64 sequences (4,096 tokens)"
    assert "final test accuracy" not in summary


def test_language_model_summary_before_any_evaluation_says_so() -> None:
    summary = rows([_step(1, 32)], tokens_per_sample=128)
    assert summary["final validation loss"] == "n/a"
    assert summary["final perplexity"] == "n/a"
    assert summary["final global batch"] == "32 sequences (4,096 tokens)"


def test_classification_summary_is_unchanged() -> None:
    summary = rows(classification_trace())
    assert summary["final test accuracy"] == "81.25%"
    assert summary["final global batch"] == "64"
    assert "final validation loss" not in summary and "final perplexity" not in summary


def test_quality_panel_is_validation_loss_for_a_language_model_and_accuracy_otherwise() -> None:
    lm = quality_panel(language_trace())
    assert lm.ylabel.startswith("validation loss")
    assert list(lm.curves.values()) == [([2, 3], [3.5, 2.25])]
    classification = quality_panel(classification_trace())
    assert classification.ylabel == "test accuracy"
    assert list(classification.curves.values()) == [([2, 3], [0.5, 0.75])]


def test_fourth_panel_shows_the_measurements_when_the_policy_makes_them() -> None:
    records = [*classification_trace(),
               {"kind": "measure", "time": 3.0, "step": 3, "name": "noise_scale", "value": 40.0},
               {"kind": "measure", "time": 3.0, "step": 3, "name": "hessian", "value": 2.0}]
    panel = measure_panel(records)
    assert panel.ylabel == "λ / noise scale"
    assert panel.curves == {"hessian": ([3], [2.0]), "noise_scale": ([3], [40.0])}


def test_fourth_panel_shows_the_learning_rate_when_nothing_is_measured() -> None:
    panel = measure_panel(classification_trace())
    assert panel.ylabel == "learning rate"
    assert panel.curves == {"learning rate": ([1, 2, 3], [0.01, 0.02, 0.03])}


def test_fourth_panel_says_why_it_is_empty_without_measurements_or_rates() -> None:
    records = [{**r, "lr": None} if r["kind"] == "step" else r for r in classification_trace()]
    panel = measure_panel(records)
    assert panel.curves == {} and "measures no" in panel.note


def test_plot_writes_a_png_for_both_kinds_of_run(tmp_path: Path) -> None:
    for name, records in (("cls", classification_trace()), ("lm", language_trace())):
        picture = plot(records, tmp_path / f"{name}.png", procs_per_replica=1)
        assert picture.read_bytes().startswith(b"\x89PNG")
