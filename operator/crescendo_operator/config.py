"""The operator's configuration: `CRESCENDO_*` environment variables, read once at start-up.

Owns every variable the operator reads (and only the operator's: the trainer's contract variables
are in crescendo_spec.contract). A bad value stops the start with the variable's name and what is
allowed, rather than surfacing later as a confusing reconcile error.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

PREFIX = "CRESCENDO_"
PROMETHEUS_URL = PREFIX + "PROMETHEUS_URL"
SCRAPE_INTERVAL = PREFIX + "SCRAPE_INTERVAL_SECONDS"
NAMESPACES = PREFIX + "NAMESPACES"
OPERATOR_METRICS_PORT = PREFIX + "OPERATOR_METRICS_PORT"
KUBE_URL = PREFIX + "KUBE_URL"
HTTP_TIMEOUT = PREFIX + "HTTP_TIMEOUT_SECONDS"


class ConfigError(ValueError):
    """A CRESCENDO_* variable with a value the operator cannot use."""


@dataclass(frozen=True)
class OperatorConfig:
    # Prometheus HTTP API base URL; empty: scrape each pod's /metrics directly.
    prometheus_url: str | None = None
    # How often each job's decision is read (the reconcile timer period).
    scrape_interval_seconds: float = 5.0
    # Namespaces to watch; empty: the whole cluster.
    namespaces: tuple[str, ...] = ()
    # Port of the operator's own /metrics; 0 disables it.
    metrics_port: int = 8080
    # API server URL without credentials (tests, `kubectl proxy`); empty: in-cluster/kubeconfig.
    kube_url: str | None = None
    # Timeout of one request to Prometheus or to a pod's /metrics.
    http_timeout_seconds: float = 2.0


def _number(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: must be a number in [{low}, {high}]") from None
    if not low <= value <= high:
        raise ConfigError(f"{name}={raw!r}: must be a number in [{low}, {high}]")
    return value


def _url(env: Mapping[str, str], name: str) -> str | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    if not raw.startswith(("http://", "https://")):
        raise ConfigError(f"{name}={raw!r}: must be an http:// or https:// URL")
    return raw.rstrip("/")


def load(env: Mapping[str, str] | None = None) -> OperatorConfig:
    """The configuration from `env` (default: os.environ); ConfigError names the variable."""
    env = os.environ if env is None else env
    port = _number(env, OPERATOR_METRICS_PORT, 8080, 0, 65535)
    if port != int(port):
        raise ConfigError(f"{OPERATOR_METRICS_PORT}={env[OPERATOR_METRICS_PORT]!r}: not a port")
    namespaces = tuple(ns.strip() for ns in env.get(NAMESPACES, "").split(",") if ns.strip())
    return OperatorConfig(
        prometheus_url=_url(env, PROMETHEUS_URL),
        scrape_interval_seconds=_number(env, SCRAPE_INTERVAL, 5.0, 0.1, 3600),
        namespaces=namespaces,
        metrics_port=int(port),
        kube_url=_url(env, KUBE_URL),
        http_timeout_seconds=_number(env, HTTP_TIMEOUT, 2.0, 0.1, 300),
    )
