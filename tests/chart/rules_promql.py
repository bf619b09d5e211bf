"""PromQL helpers for the chart's alert-rule and dashboard tests.

Owns two checks: which metric names an expression reads (a small tokeniser, so a test can hold
them to the contract's names), and whether expressions parse (`promtool check rules` on a rule
file that wraps them). Debian's `promtool` ships with the `prometheus` package, like the server
the operator tests use (tests/prometheus_server.py); tests that need it skip without it.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path

import yaml
from crescendo_spec import contract

from tests.prometheus_server import PROMTOOL, with_promtool

__all__ = ["PROMTOOL", "with_promtool"]


CONTRACT_METRICS = frozenset((*contract.TRAINER_METRICS, *contract.OPERATOR_METRICS))
# Counters are exposed with _total, histograms with _bucket/_sum/_count.
SERIES_SUFFIXES = ("_total", "_bucket", "_sum", "_count")
# Words that stand between operands and are not metric names; functions and aggregations are
# recognised by the "(" that follows them instead of by a list.
KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan", "group_left", "group_right",
     "by", "without", "on", "ignoring"}
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_TOKEN = re.compile(r"[A-Za-z_:][\w:]*|\d[\w.]*|\.\d+")
_SELECTOR = re.compile(r"([A-Za-z_:][\w:]*)\s*(\{[^{}]*\})")
_LABEL_VALUES = re.compile(r"^\s*label_values\((.*),\s*([A-Za-z_]\w*)\s*\)\s*$", re.DOTALL)

# Grafana's variables, replaced by valid values before PromQL sees an expression.
GRAFANA_VALUES = {
    "__rate_interval": "2m",
    "__interval": "30s",
    "__range": "6h",
    "namespace": "ml",
    "job": "digits|mnist",
}


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects: what is left once strings, label matchers,
    ranges, label lists, numbers, keywords and function names are taken out."""
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _LABEL_LIST.sub(" ", text)
    names = set()
    for token in _TOKEN.finditer(text):
        word = token.group()
        if word[0].isdigit() or word[0] == "." or word.lower() in KEYWORDS:
            continue
        if text[token.end():].lstrip().startswith("("):
            continue  # a function or an aggregation
        names.add(word)
    return names


def _in_contract(name: str) -> bool:
    if name in CONTRACT_METRICS:
        return True
    return any(name.endswith(s) and name.removesuffix(s) in CONTRACT_METRICS
               for s in SERIES_SUFFIXES)


def contract_problems(expr: str) -> list[str]:
    """Why `expr` reads something other than the contract's metrics; empty when it does not."""
    problems = [f"{name!r} is not a contract metric" for name in sorted(metric_names(expr))
                if not _in_contract(name)]
    if "__name__" in expr:
        problems.append("selects by __name__, which hides the metric name")
    if not metric_names(expr):
        problems.append("reads no metric")
    return problems


def selectors(expr: str) -> list[tuple[str, str]]:
    """(metric name, `{...}` matchers) of every vector selector that has matchers."""
    return [(m.group(1), m.group(2)) for m in _SELECTOR.finditer(expr)
            if m.group(1) not in KEYWORDS]


def label_values_query(query: str) -> tuple[str, str]:
    """(series selector, label) of a Grafana `label_values(selector, label)` variable query."""
    match = _LABEL_VALUES.match(query)
    assert match, f"not a label_values(selector, label) query: {query}"
    return match.group(1), match.group(2)


def substitute(expr: str, values: Mapping[str, str] = GRAFANA_VALUES) -> str:
    """`expr` with Grafana's `$name` / `${name}` variables replaced by valid values."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        assert name in values, f"unknown dashboard variable ${name} in {expr}"
        return values[name]

    done = re.sub(r"\$\{(\w+)\}|\$(\w+)", value, expr)
    assert "$" not in done, done
    return done


def run_promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PROMTOOL, *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )


def check_expressions(exprs: Iterable[str], workdir: Path) -> subprocess.CompletedProcess[str]:
    """`promtool check rules` on a rule file that records each expression."""
    rules = [{"record": f"crescendo:check_{n}", "expr": e} for n, e in enumerate(exprs)]
    path = workdir / "wrapped-expressions.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "check", "rules": rules}]}))
    return run_promtool("check", "rules", path)
