"""Writing a file so that it appears whole or not at all: the one helper both sides use.

Write to a temporary file in the target's directory, flush, fsync (when durable), rename over the
target, then fsync the directory so the rename itself survives a crash (the torchelastic ImageNet
example's habit). A crash or an exception at any point leaves the previous file intact and no
temporary file behind; a reader never sees half a file. Checkpoints, the parsed data-set cache,
the token corpus and `crescendo local`'s status files are written through it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


@contextlib.contextmanager
def atomic_write(target: Path, *, durable: bool = True) -> Iterator[BinaryIO]:
    """A binary handle whose content becomes `target` when the block ends without an error.
    `durable=False` skips the fsyncs, for files that are only a cache or a view."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        directory = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
