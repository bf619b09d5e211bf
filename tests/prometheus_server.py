"""A real Prometheus server (Debian's `prometheus`) for tests, on a free loopback port."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import httpx
import pytest


def _needs(binary: str) -> tuple[str, list[pytest.MarkDecorator]]:
    """Where Debian's `prometheus` package put `binary`, and the marks of a test that runs it."""
    path = shutil.which(binary) or f"/usr/bin/{binary}"
    marks = [
        pytest.mark.prometheus,
        pytest.mark.skipif(
            not Path(path).exists(),
            reason=f"Debian's {binary} is not installed (apt-get install prometheus; "
            "`make system-deps` does it)",
        ),
    ]
    return path, marks


PROMETHEUS, needs_prometheus = _needs("prometheus")
PROMTOOL, needs_promtool = _needs("promtool")
_Test = TypeVar("_Test", bound=Callable[..., object])


def with_promtool(test: _Test) -> _Test:
    """Mark a test as needing promtool: it skips, with the reason, where there is none."""
    for mark in needs_promtool:
        test = mark(test)
    return test


def free_port() -> int:
    """A TCP port nothing listens on now (loopback)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def prometheus_server(
    workdir: Path, scrape_configs: str, rule_files: Sequence[Path] = ()
) -> Iterator[str]:
    """Run Prometheus with a 1 s scrape and rule-evaluation interval, the given `scrape_configs`
    YAML list and rule files; yields its base URL once it answers /-/ready."""
    port = free_port()
    config = workdir / "prometheus.yml"
    rules = "".join(f"  - {path}\n" for path in rule_files)
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"scrape_configs:\n{scrape_configs}" + (f"rule_files:\n{rules}" if rules else "")
    )
    process = subprocess.Popen(
        [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'prom-data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("prometheus did not become ready within 20 s")
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)
