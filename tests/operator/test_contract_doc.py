"""docs/contract.md lists exactly the names of crescendo_spec.contract (golden)."""

from __future__ import annotations

import re
from pathlib import Path

from crescendo_spec import contract

DOC = Path(__file__).resolve().parents[2] / "docs/contract.md"


def _names(prefix: str) -> set[str]:
    return {str(getattr(contract, n)) for n in dir(contract) if n.startswith(prefix)}


def _documented() -> set[str]:
    return set(re.findall(r"`([A-Za-z_][\w./-]*)`", DOC.read_text()))


def test_every_env_variable_is_documented_and_none_invented() -> None:
    documented = {n for n in _documented() if re.fullmatch(r"[A-Z][A-Z0-9_]+", n)}
    assert documented == _names("ENV_")


def test_every_trainer_metric_is_documented_and_none_invented() -> None:
    documented = {n for n in _documented() if n.startswith(contract.PREFIX)}
    documented = {n.removesuffix("_total") for n in documented}
    assert documented == set(contract.TRAINER_METRICS) == _names("METRIC_")


def test_labels_and_annotations_are_documented() -> None:
    documented = _documented()
    expected = _names("LABEL_") | _names("POD_LABEL_") | _names("ANNOTATION_")
    assert expected <= documented
    assert {n for n in documented if n.startswith(contract.GROUP + "/")} == (
        _names("POD_LABEL_") | _names("ANNOTATION_"))
