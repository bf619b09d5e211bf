"""The grammar of batch schedules (`spec.batch.schedule`): unit counts and step schedules.

Owns reading a count of consumed units (`"2.4B"`: digits, an optional decimal part, an optional
K/M/B/T suffix = 1e3/1e6/1e9/1e12), a Megatron-LM style step schedule (`"0:16 2.4B:320"`: from 0
units on the global batch is 16 sequences, from 2.4 billion on 320), writing counts back the same
way for messages, and the one rule saying what `unit: auto` counts. Pure and torch-free: the spec
model validates with it, so `crescendo validate`, the operator's admission and the trainer's policy
read a schedule with the same parser and the same messages.
"""

from __future__ import annotations

import re
from typing import Final, Literal

ScheduleUnit = Literal["auto", "tokens", "samples"]
CountedUnit = Literal["tokens", "samples"]

UNIT_SUFFIXES: Final[dict[str, int]] = {"K": 10**3, "M": 10**6, "B": 10**9, "T": 10**12}

# `[0-9]`, not `\d`: Python's `\d` also matches other scripts' digits, which Go's RE2 (the API
# server's `pattern`) and `int()` would then disagree about.
_COUNT = r"[0-9]+(?:\.[0-9]+)?[KMBT]?"
_BATCH = r"[0-9]+"
_COUNT_RE: Final = re.compile(r"([0-9]+)(?:\.([0-9]+))?([KMBT]?)")
_BATCH_RE: Final = re.compile(_BATCH)
# The schema's `pattern`s: the grammar only. What needs the numbers (first threshold 0, strictly
# increasing, batches in [1, batch.max], a ramp longer than 0) is checked by the parser below.
COUNT_PATTERN: Final = rf"^{_COUNT}$"
STEPS_PATTERN: Final = rf"^\s*{_COUNT}:{_BATCH}(?:\s+{_COUNT}:{_BATCH})*\s*$"

_COUNT_HELP = (
    "digits with an optional decimal part and an optional K, M, B or T suffix "
    "(1e3, 1e6, 1e9, 1e12), e.g. 2.4B"
)
_STEPS_EXAMPLE = "'0:16 2.4B:320'"


def parse_units(text: str) -> int:
    """A count of units: `"2.4B"` → 2_400_000_000; ValueError saying what is allowed."""
    match = _COUNT_RE.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a count: write {_COUNT_HELP}")
    whole: str = match.group(1)
    fraction: str = match.group(2) or ""
    scale = UNIT_SUFFIXES.get(match.group(3), 1)
    # Integer arithmetic, not float or Decimal: "2.4B" must be exactly 2_400_000_000 at any size.
    numerator = int(fraction or "0") * scale
    denominator: int = 10 ** len(fraction)
    if numerator % denominator:
        raise ValueError(
            f"{text!r} is not a whole number of units: use fewer decimals or a smaller suffix"
        )
    return int(whole) * scale + numerator // denominator


def parse_step_schedule(text: str) -> tuple[tuple[int, int], ...]:
    """`"0:16 2.4B:320"` → ((0, 16), (2_400_000_000, 320)): (threshold, batch) pairs.

    Steps are separated by whitespace; thresholds start at 0 and strictly increase; batches are
    whole numbers ≥ 1. A ValueError names the step (1-based) and its text.
    """
    tokens = text.split()
    if not tokens:
        raise ValueError(
            f"must hold at least one '<threshold>:<batch>' step, e.g. {_STEPS_EXAMPLE}"
        )
    steps: list[tuple[int, int]] = []
    for position, token in enumerate(tokens, start=1):
        where = f"step {position} {token!r}"
        threshold_text, colon, batch_text = token.partition(":")
        if not colon:
            raise ValueError(f"{where}: must be '<threshold>:<batch>', e.g. '2.4B:320'")
        try:
            threshold = parse_units(threshold_text)
        except ValueError as exc:
            raise ValueError(f"{where}: threshold {exc}") from None
        if not _BATCH_RE.fullmatch(batch_text) or int(batch_text) < 1:
            raise ValueError(f"{where}: batch {batch_text!r} must be a whole number >= 1")
        if not steps and threshold != 0:
            raise ValueError(
                f"{where}: the first threshold must be 0 (the batch the job starts with)"
            )
        if steps and threshold <= steps[-1][0]:
            previous = format_units(steps[-1][0])
            raise ValueError(
                f"{where}: threshold {format_units(threshold)} must be greater than the "
                f"previous one, {previous}: thresholds strictly increase"
            )
        steps.append((threshold, int(batch_text)))
    return tuple(steps)


def format_units(count: int, decimals: int | None = None) -> str:
    """A count with the largest suffix it reaches: exact (`2.4B`), or rounded to `decimals`
    (`2.40B`); counts below 1K are whole numbers either way."""
    scale, suffix = 1, ""
    for name, value in UNIT_SUFFIXES.items():
        if count >= value:
            scale, suffix = value, name
    if decimals is not None and suffix:
        return f"{count / scale:.{decimals}f}{suffix}"
    whole, rest = divmod(count, scale)
    if not rest:
        return f"{whole}{suffix}"
    digits = len(str(scale)) - 1
    return f"{whole}.{str(rest).rjust(digits, '0').rstrip('0')}{suffix}"


def counted_unit(unit: ScheduleUnit, *, language_model: bool) -> CountedUnit:
    """What the thresholds count: `auto` is tokens for a language model, samples otherwise."""
    if unit == "auto":
        return "tokens" if language_model else "samples"
    return unit
