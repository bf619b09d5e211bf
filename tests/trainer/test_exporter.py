"""The trainer's exporter serves exactly the contract's metric names, lint-clean."""

from __future__ import annotations

import subprocess

from crescendo_spec import contract
from crescendo_trainer.exporter import TrainerMetrics
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.prometheus_server import PROMTOOL, with_promtool


def exposition() -> str:
    metrics = TrainerMetrics("mnist", "team")
    metrics.global_batch.set(256)
    metrics.samples.inc(512)
    metrics.worker_restarts.set(2)
    metrics.lost_steps.inc(37)
    metrics.last_checkpoint_time = 0.0
    return generate_latest(metrics.registry).decode()


def test_families_are_exactly_the_contract_metrics() -> None:
    families = {f.name for f in text_string_to_metric_families(exposition())}
    assert families == set(contract.TRAINER_METRICS)


def test_every_series_carries_only_the_contract_labels() -> None:
    for family in text_string_to_metric_families(exposition()):
        for sample in family.samples:
            labels = set(sample.labels) - {"reason"}
            assert labels == set(contract.TRAINER_LABELS), sample
            assert sample.labels["crescendo_job"] == "mnist"


def test_counters_end_in_total_and_values_are_exported() -> None:
    text = exposition()
    labels = '{crescendo_job="mnist",crescendo_namespace="team"}'
    assert f"crescendo_trainer_samples_total{labels} 512.0" in text
    assert f"crescendo_trainer_global_batch_size{labels} 256.0" in text
    assert f"crescendo_trainer_lost_steps_total{labels} 37.0" in text
    assert f"crescendo_trainer_worker_restarts{labels} 2.0" in text


@with_promtool
def test_promtool_finds_no_naming_problem() -> None:
    result = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=exposition(), capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_batch_sample_before_the_trainer_knows_its_batch() -> None:
    metrics = TrainerMetrics("mnist", "team")
    fresh = generate_latest(metrics.registry).decode()
    assert f"{contract.METRIC_DESIRED_BATCH}{{" not in fresh, "a 0 the operator must reject"
    metrics.desired_batch.set(128)
    assert f"{contract.METRIC_DESIRED_BATCH}{{" in generate_latest(metrics.registry).decode()


def test_lost_steps_appear_only_once_counted_so_no_scrape_sees_a_zero_first() -> None:
    metrics = TrainerMetrics("job", "ns")
    series = f"{contract.METRIC_LOST_STEPS}_total{{"
    assert series not in generate_latest(metrics.registry).decode()  # HELP/TYPE only
    metrics.lost_steps.inc(37)
    text = generate_latest(metrics.registry).decode()
    labels = '{crescendo_job="job",crescendo_namespace="ns"}'
    assert f"{contract.METRIC_LOST_STEPS}_total{labels} 37.0" in text
