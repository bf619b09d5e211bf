"""Turning user input (a manifest, a spec mapping, a YAML/JSON file) into a `JobSpec`.

Owns the error messages: every violation names its field path (`spec.batch.initial`) and what is
allowed, so the operator's condition, the trainer's exit message and `crescendo local` agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from crescendo_spec.model import JobSpec

KIND = "AdaptiveBatchJob"
API_VERSION = "crescendo.dev/v1alpha1"


class SpecError(ValueError):
    """An invalid job spec; `problems` holds one 'path: what is allowed' line per violation."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid AdaptiveBatchJob spec:\n  " + "\n  ".join(problems))


def _problem(error: Mapping[str, Any]) -> str:
    path = ".".join(["spec", *(str(part) for part in error["loc"])])
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] in {"missing", "extra_forbidden", "value_error"}:
        return f"{path}: {message}"
    return f"{path}: {message} (got {error.get('input')!r})"


def parse_spec(spec: Mapping[str, Any]) -> JobSpec:
    """Validate a `spec` mapping; raise SpecError naming every bad field."""
    if not isinstance(spec, Mapping):
        raise SpecError([f"spec: must be a mapping (got {type(spec).__name__})"])
    try:
        return JobSpec.model_validate(dict(spec))
    except ValidationError as exc:
        raise SpecError([_problem(e) for e in exc.errors()]) from None


def spec_of(document: Mapping[str, Any]) -> Mapping[str, Any]:
    """The spec inside a whole AdaptiveBatchJob manifest, or the document itself if it is one."""
    if document.get("kind") == KIND:
        if document.get("apiVersion") != API_VERSION:
            got = document.get("apiVersion")
            raise SpecError([f"apiVersion: must be {API_VERSION} (got {got!r})"])
        spec = document.get("spec")
        if not isinstance(spec, Mapping):
            raise SpecError(["spec: required mapping is missing"])
        return spec
    if "kind" in document:
        raise SpecError([f"kind: must be {KIND} (got {document['kind']!r})"])
    return document


def load_document(path: Path) -> dict[str, Any]:
    """Read one YAML/JSON document; SpecError if it is unreadable or not a mapping."""
    try:
        loaded = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise SpecError([f"{path}: cannot be read ({exc.strerror})"]) from None
    except yaml.YAMLError as exc:
        raise SpecError([f"{path}: not valid YAML/JSON ({exc})"]) from None
    if not isinstance(loaded, dict):
        raise SpecError([f"{path}: must hold a mapping (an AdaptiveBatchJob or its spec)"])
    return loaded


def load_spec(path: Path) -> JobSpec:
    """Read and validate a job file: an AdaptiveBatchJob manifest or a bare spec."""
    return parse_spec(spec_of(load_document(path)))
