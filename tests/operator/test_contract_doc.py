"""docs/contract.md lists exactly the names of crescendo_spec.contract (golden)."""

from __future__ import annotations

import re
from pathlib import Path

from crescendo_spec import contract

DOC = Path(__file__).resolve().parents[2] / "docs/contract.md"


def _names(prefix: str) -> set[str]:
    return {str(getattr(contract, n)) for n in dir(contract) if n.startswith(prefix)}


def _documented(section: str = "") -> set[str]:
    """Backticked names of the page, or of the `## <section>...` part of it."""
    text = DOC.read_text()
    if section:
        text = text.split("\n## " + section, 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"`([A-Za-z_][\w./-]*)`", text))


def test_every_env_variable_is_documented_and_none_invented() -> None:
    documented = {
        n for n in _documented("Environment variables") if re.fullmatch(r"[A-Z][A-Z0-9_]+", n)
    }
    assert documented == _names("ENV_")


def test_every_trainer_metric_is_documented_and_none_invented() -> None:
    documented = {n for n in _documented() if n.startswith(contract.PREFIX)}
    documented = {n.removesuffix("_total") for n in documented}
    assert documented == set(contract.TRAINER_METRICS)


def test_every_operator_metric_is_documented_and_none_invented() -> None:
    documented = {n for n in _documented() if n.startswith(contract.OPERATOR_PREFIX)}
    documented = {n.removesuffix("_total") for n in documented}
    assert documented == set(contract.OPERATOR_METRICS)


def test_every_metric_constant_is_in_exactly_one_list() -> None:
    trainer, operator = set(contract.TRAINER_METRICS), set(contract.OPERATOR_METRICS)
    assert not trainer & operator
    assert trainer | operator == _names("METRIC_")


def test_labels_and_annotations_are_documented() -> None:
    documented = _documented()
    expected = _names("LABEL_") | _names("POD_LABEL_") | _names("ANNOTATION_")
    assert expected <= documented
    assert {n for n in documented if n.startswith(contract.GROUP + "/")} == (
        _names("POD_LABEL_") | _names("ANNOTATION_"))
