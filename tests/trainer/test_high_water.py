"""The high-water record: rank 0's last completed step, overwritten in place, checked on read."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from crescendo_trainer import high_water
from crescendo_trainer.high_water import HighWaterWriter, Mark


def test_the_last_write_is_what_a_reopened_directory_reads(tmp_path: Path) -> None:
    writer = HighWaterWriter(tmp_path / "ckpt")
    for step in range(1, 301):
        writer.write(step, 17)
    writer.close()
    assert high_water.read(tmp_path / "ckpt") == Mark(step=300, lost_total=17)
    path = high_water.record_path(tmp_path / "ckpt")
    assert path.stat().st_size == high_water.RECORD_SIZE, "written in place, not appended"


def test_a_killed_writer_leaves_its_last_record_without_close_or_fsync(tmp_path: Path) -> None:
    trainer = (  # writes, then dies at once: no close, no flush, no interpreter shutdown
        "import os, sys\n"
        "from pathlib import Path\n"
        "from crescendo_trainer.high_water import HighWaterWriter\n"
        "writer = HighWaterWriter(Path(sys.argv[1]))\n"
        "for step in range(1, 58):\n"
        "    writer.write(step, 3)\n"
        "os.kill(os.getpid(), 9)\n"
    )
    result = subprocess.run([sys.executable, "-c", trainer, str(tmp_path)], timeout=60)
    assert result.returncode == -signal.SIGKILL
    assert high_water.read(tmp_path) == Mark(step=57, lost_total=3)


def test_a_new_writer_keeps_the_previous_record_until_it_writes(tmp_path: Path) -> None:
    HighWaterWriter(tmp_path).write(42, 5)
    reopened = HighWaterWriter(tmp_path)  # a restarted rank 0, before its first write
    assert high_water.read(tmp_path) == Mark(42, 5)
    reopened.write(40, 7)
    assert high_water.read(tmp_path) == Mark(40, 7), "a lower step overwrites: it is the newest"


def test_no_record_is_a_fresh_directory_without_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        assert high_water.read(tmp_path) is None
        assert high_water.read(tmp_path / "absent") is None
    assert caplog.text == ""


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("empty", "short (0 of 24 bytes)"),
        ("short", "short (12 of 24 bytes)"),
        ("magic", "bad magic"),
        ("flip", "CRC mismatch"),
    ],
)
def test_a_damaged_record_is_unknown_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str, message: str
) -> None:
    good = high_water.encode(120, 4)
    damaged = {
        "empty": b"",
        "short": good[:12],
        "magic": b"XXXX" + good[4:],
        "flip": good[:4] + bytes([good[4] ^ 0x01]) + good[5:],  # step 120 → 121, CRC unchanged
    }[damage]
    high_water.record_path(tmp_path).write_bytes(damaged)
    with caplog.at_level(logging.WARNING):
        assert high_water.read(tmp_path) is None
    assert message in caplog.text and "no lost steps counted" in caplog.text
