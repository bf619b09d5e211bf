"""A file written through crescendo_spec.atomic appears whole or not at all."""

from __future__ import annotations

from pathlib import Path

import pytest
from crescendo_spec.atomic import atomic_write


@pytest.mark.parametrize("durable", [True, False])
def test_the_new_content_replaces_the_old_whole(tmp_path: Path, durable: bool) -> None:
    target = tmp_path / "sub" / "file.bin"
    with atomic_write(target, durable=durable) as handle:
        handle.write(b"first")
    with atomic_write(target, durable=durable) as handle:
        handle.write(b"second")
    assert target.read_bytes() == b"second"
    assert sorted(p.name for p in target.parent.iterdir()) == ["file.bin"]


def test_an_error_mid_write_keeps_the_previous_file_and_leaves_no_temporary(
    tmp_path: Path,
) -> None:
    target = tmp_path / "file.bin"
    target.write_bytes(b"previous")
    with pytest.raises(RuntimeError), atomic_write(target) as handle:
        handle.write(b"half of the")
        raise RuntimeError("disk full")
    assert target.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["file.bin"]
