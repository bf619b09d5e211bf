"""Checkpoints: atomic, versioned, verified, with fallback to the previous one.

A checkpoint is one file `ckpt-<step>.pt` in a directory all replicas share, written by global
rank 0 only: the torch.save payload is hashed (SHA-256) and written after a magic header and the
digest to a temporary file, fsynced, then renamed over the final name, so a crash mid-write
leaves the previous checkpoint intact (the torchelastic ImageNet example's habit). Loading
verifies the header, the digest and the payload version; a bad newest file is reported and
skipped for the previous one; if files exist but none is loadable the trainer stops with an
error: never a silent restart from step 0.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from crescendo_spec.atomic import atomic_write

log = logging.getLogger(__name__)

VERSION = 2  # 2: one entry per registered component (state.py)
MAGIC = b"CRESCENDO-CKPT-1\n"
_NAME = re.compile(r"^ckpt-(\d{9,})\.pt$")


class CheckpointError(RuntimeError):
    """No checkpoint in a non-empty directory could be loaded."""


@dataclass(frozen=True)
class Loaded:
    path: Path
    payload: dict[str, Any]
    skipped: tuple[Path, ...]  # newer files that were corrupt


def checkpoint_path(directory: Path, step: int) -> Path:
    return directory / f"ckpt-{step:09d}.pt"


def list_checkpoints(directory: Path) -> list[Path]:
    """Checkpoint files, newest (highest step) first."""
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def save(directory: Path, step: int, payload: dict[str, Any], keep: int) -> Path:
    """Write `payload` as the checkpoint of `step` atomically; prune to the newest `keep`."""
    directory.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save({"version": VERSION, **payload}, buffer)
    data = buffer.getvalue()
    target = checkpoint_path(directory, step)
    with atomic_write(target) as handle:
        handle.write(MAGIC + hashlib.sha256(data).digest() + data)
    for old in list_checkpoints(directory)[keep:]:
        old.unlink(missing_ok=True)
    return target


def read(path: Path) -> dict[str, Any]:
    """Load and verify one checkpoint file; ValueError says what is wrong with it."""
    raw = path.read_bytes()
    header = len(MAGIC) + 32
    if not raw.startswith(MAGIC) or len(raw) < header:
        raise ValueError("not a Crescendo checkpoint (bad header or truncated)")
    digest, data = raw[len(MAGIC) : header], raw[header:]
    if hashlib.sha256(data).digest() != digest:
        raise ValueError("content does not match its SHA-256 (truncated or corrupted)")
    payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("version") != VERSION:
        raise ValueError(f"payload version is not {VERSION}")
    return payload


def load_latest(directory: Path) -> Loaded | None:
    """The newest loadable checkpoint; None only when the directory holds none at all."""
    candidates = list_checkpoints(directory)
    skipped: list[Path] = []
    for path in candidates:
        try:
            payload = read(path)
        except (ValueError, RuntimeError, OSError, EOFError) as exc:
            log.warning("checkpoint %s is unusable (%s); trying the previous one", path, exc)
            skipped.append(path)
            continue
        return Loaded(path, payload, tuple(skipped))
    if candidates:
        raise CheckpointError(
            f"none of the {len(candidates)} checkpoints in {directory} can be loaded "
            f"({', '.join(p.name for p in candidates)}); refusing to restart from step 0: "
            "restore a good checkpoint or point checkpoint.dir at an empty directory"
        )
    return None
