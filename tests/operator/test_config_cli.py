"""Operator configuration from CRESCENDO_* variables, the `crescendo` CLI, exposition parsing."""

from __future__ import annotations

from pathlib import Path

import pytest
from crescendo_operator import config
from crescendo_operator.cli import main
from crescendo_operator.metrics_source import ScrapeTarget, parse_exposition, promql
from crescendo_spec.crd import crd_yaml

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_without_variables() -> None:
    loaded = config.load({})
    assert loaded.prometheus_url is None and loaded.namespaces == ()
    assert loaded.scrape_interval_seconds == 5.0 and loaded.metrics_port == 8080


def test_variables_are_read() -> None:
    loaded = config.load({
        "CRESCENDO_PROMETHEUS_URL": "http://prometheus:9090/",
        "CRESCENDO_SCRAPE_INTERVAL_SECONDS": "1.5",
        "CRESCENDO_NAMESPACES": "ml, research",
        "CRESCENDO_OPERATOR_METRICS_PORT": "0",
    })
    assert loaded.prometheus_url == "http://prometheus:9090"
    assert loaded.scrape_interval_seconds == 1.5
    assert loaded.namespaces == ("ml", "research") and loaded.metrics_port == 0


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CRESCENDO_SCRAPE_INTERVAL_SECONDS", "soon"),
        ("CRESCENDO_SCRAPE_INTERVAL_SECONDS", "0"),
        ("CRESCENDO_OPERATOR_METRICS_PORT", "70000"),
        ("CRESCENDO_OPERATOR_METRICS_PORT", "80.5"),
        ("CRESCENDO_PROMETHEUS_URL", "prometheus:9090"),
    ],
)
def test_bad_values_fail_fast_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(config.ConfigError, match=name):
        config.load({name: value})


def test_cli_crd_prints_the_generated_crd(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["crd"]) == 0
    assert capsys.readouterr().out == crd_yaml()


def test_cli_validate_accepts_the_examples(capsys: pytest.CaptureFixture[str]) -> None:
    examples = sorted(str(p) for p in (ROOT / "manifests/examples").glob("*.yaml"))
    assert main(["validate", *examples]) == 0
    assert capsys.readouterr().out.count(": valid") == len(examples)


def test_cli_validate_prints_field_paths_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: crescendo.dev/v1alpha1\nkind: AdaptiveBatchJob\n"
                   "spec: {epochs: 1, replicas: {min: 4, max: 2}, gpusPerReplica: -1}\n")
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "spec.replicas: min (4) must be <= max (2)" in err
    assert "spec.gpusPerReplica" in err


def test_cli_operator_stops_on_a_bad_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CRESCENDO_SCRAPE_INTERVAL_SECONDS", "never")
    assert main(["operator"]) == 1
    assert "CRESCENDO_SCRAPE_INTERVAL_SECONDS" in capsys.readouterr().err


def test_exposition_parsing_keeps_only_this_jobs_contract_samples() -> None:
    desired = "crescendo_trainer_desired_global_batch_size"
    page = (
        f"# TYPE {desired} gauge\n"
        f'{desired}{{crescendo_job="a",crescendo_namespace="n"}} 512\n'
        f'{desired}{{crescendo_job="b",crescendo_namespace="n"}} 8\n'
        "# TYPE crescendo_trainer_loss gauge\n"
        'crescendo_trainer_loss{crescendo_job="a",crescendo_namespace="n"} 0.3\n'
    )
    found = parse_exposition(page, ScrapeTarget("n", "a"), scraped_at=100.0)
    samples = found["crescendo_trainer_desired_global_batch_size"]
    assert [(s.value, s.timestamp) for s in samples] == [(512.0, 100.0)]


def test_promql_selects_raw_samples_of_one_job_over_the_staleness_window() -> None:
    query = promql(ScrapeTarget("ml", "resnet", window_seconds=120))
    assert query.endswith('crescendo_job="resnet",crescendo_namespace="ml"}[120s]')
    assert "crescendo_trainer_desired_global_batch_size" in query
