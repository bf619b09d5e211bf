"""The policy run against its fixed-B0 baseline, from synthetic traces; the baseline's spec."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from crescendo_operator.local.agents import LocalPaths
from crescendo_operator.local.baseline import prepare_baseline, run_unless_finished
from crescendo_operator.local.compare import (
    ACCURACY,
    VAL_LOSS,
    Comparison,
    RunTrace,
    baseline_spec,
    compare,
    comparison_json,
    comparison_table,
    curves,
    plot_comparison,
    wall_seconds,
)
from crescendo_operator.local.runner import LocalError, LocalOptions, prepare
from crescendo_spec.parse import load_spec
from rich.console import Console

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "manifests/examples").glob("*.yaml"))
Records = list[dict[str, Any]]


def trace(batches: list[int], evals: dict[int, float], field: str = "accuracy",
          world: int = 1) -> Records:
    """One step record per batch, one second apart; an eval after the steps in `evals`; done
    with the last eval's figure. A step's world is 1, or `world` once the batch grew."""
    records: Records = []
    for step, batch in enumerate(batches, start=1):
        records.append({"kind": "step", "time": float(step), "step": step, "epoch": 0,
                        "world": 1 if batch == batches[0] else world, "batch": batch,
                        "loss": 1.0, "lr": 0.1, "seconds": 1.0})
        if step in evals:
            records.append({"kind": "eval", "time": step + 0.5, "step": step, "epoch": 0,
                            field: evals[step]})
    last = records[-1]
    records.append({"kind": "done", "time": last["time"] + 0.5, "step": len(batches),
                    field: evals[max(evals)]})
    return records


BASELINE = RunTrace("fixed B0=32", trace([32] * 10, {4: 0.70, 8: 0.78, 10: 0.80}))
POLICY = RunTrace("adabatch", trace([32] * 4 + [64] * 3, {4: 0.72, 6: 0.81, 7: 0.82}, world=2))


def run(records: Records, label: str = "adabatch") -> RunTrace:
    return RunTrace(label, records)


def test_policy_reaching_the_baselines_final_accuracy_sooner_has_ratios_above_one() -> None:
    found = compare(POLICY, BASELINE)
    assert found.quality is ACCURACY and found.target == 0.80
    assert found.policy.to_target is not None and found.baseline.to_target is not None
    assert (found.policy.to_target.steps, found.policy.to_target.samples) == (6, 4 * 32 + 2 * 64)
    assert (found.baseline.to_target.steps, found.baseline.to_target.samples) == (10, 320)
    assert found.policy.to_target.wall_seconds == 5.5  # first record at 1 s, eval at 6.5 s
    assert found.ratios == {"steps": 10 / 6, "samples": 320 / 256, "wall_seconds": 9.5 / 5.5}
    assert (found.policy.steps, found.policy.samples, found.policy.final_batch) == (7, 320, 64)
    assert found.policy.final_quality == 0.82 and found.baseline.final_quality == 0.80


def test_validation_loss_is_reached_from_above() -> None:
    baseline = trace([16] * 8, {4: 3.0, 8: 2.5}, field="val_loss")
    policy = trace([16] * 2 + [32] * 4, {2: 3.2, 4: 2.6, 6: 2.4}, field="val_loss")
    found = compare(run(policy, "schedule"), run(baseline, "fixed B0=16"))
    assert found.quality is VAL_LOSS and found.target == 2.5
    assert found.policy.to_target is not None and found.policy.to_target.steps == 6
    assert found.ratios["steps"] == 8 / 6


def test_a_policy_that_never_reaches_the_target_says_not_reached_and_has_no_ratio() -> None:
    policy = trace([32] * 4 + [64] * 3, {4: 0.72, 7: 0.79}, world=2)
    found = compare(run(policy), BASELINE)
    assert found.policy.to_target is None
    assert found.ratios == {"steps": None, "samples": None, "wall_seconds": None}
    table = rows(found)
    assert table["optimizer steps to target"] == ["not reached", "10", "n/a"]
    assert table["final test accuracy"] == ["79.00%", "80.00%", ""]


def test_the_baseline_reaches_its_final_quality_at_its_first_evaluation_at_or_beyond_it() -> None:
    # Accuracy is not monotone: the baseline was at its final figure before it dipped.
    baseline = trace([32] * 6, {2: 0.81, 4: 0.78, 6: 0.80})
    found = compare(POLICY, run(baseline, "fixed B0=32"))
    assert found.baseline.to_target is not None and found.baseline.to_target.steps == 2


def test_a_baseline_without_an_evaluation_cannot_be_compared() -> None:
    steps_only = [r for r in BASELINE.records if r["kind"] == "step"]
    with pytest.raises(ValueError, match="no evaluation"):
        compare(POLICY, run(steps_only, "fixed B0=32"))


STOPPED_AND_RESUMED: Records = [
    {"kind": "step", "time": 10.0, "step": 1, "batch": 32},
    {"kind": "stop", "time": 12.0, "step": 1, "signal": "SIGTERM"},  # Ctrl-C
    {"kind": "resume", "time": 3605.0, "step": 1, "old_world": 1, "world": 1},
    {"kind": "step", "time": 3606.0, "step": 2, "batch": 32},
]


def test_wall_time_counts_each_invocation_from_its_start_and_not_the_time_between() -> None:
    # Started at 4 s (first step at 10 s: start-up counts), again at 3600 s with --resume.
    assert wall_seconds(STOPPED_AND_RESUMED, [4.0, 3600.0]) == [6.0, 8.0, 13.0, 14.0]


def test_wall_time_without_known_starts_counts_from_the_first_record() -> None:
    assert wall_seconds(STOPPED_AND_RESUMED) == [0.0, 2.0, 3595.0, 3596.0]
    assert wall_seconds([]) == []


def test_a_rescale_pause_is_wall_time_of_the_policy() -> None:
    # A rescale stops and resumes the trainers too, within one invocation: its pause counts.
    rescale = [{**r, "time": r["time"] - 3590.0} if r["time"] > 3600 else r
               for r in STOPPED_AND_RESUMED]  # resumed 3 s after the stop
    assert wall_seconds(rescale, [4.0]) == [6.0, 8.0, 11.0, 12.0]


def test_rescales_and_lost_steps_come_from_the_trace() -> None:
    records = POLICY.records
    rescaled = [*records[:5],
                {"kind": "resume", "time": 4.6, "step": 3, "old_world": 1, "world": 2},
                {"kind": "pause", "time": 5.0, "step": 4, "seconds": 0.4, "old_world": 1,
                 "world": 2},
                *records[5:]]
    found = compare(run(rescaled), BASELINE)
    assert (found.policy.rescales, found.policy.lost_steps) == (1, 1)
    assert (found.baseline.rescales, found.baseline.lost_steps) == (0, 0)


def rows(comparison: Comparison) -> dict[str, list[str]]:
    """The table as {row label: [policy, baseline, ratio]}, the text a user reads."""
    table = comparison_table(comparison)
    Console(width=200, record=True).print(table)  # it renders
    labels, *values = (list(c.cells) for c in table.columns)
    return {str(label): [str(v[n]) for v in values] for n, label in enumerate(labels)}


def test_table_shows_both_runs_to_the_target_and_the_ratios() -> None:
    table = rows(compare(POLICY, BASELINE))
    assert table["optimizer steps to target"] == ["6", "10", "1.67×"]
    assert table["samples to target"] == ["256", "320", "1.25×"]
    assert table["wall time to target"] == ["5.5 s", "9.5 s", "1.73×"]
    assert table["final global batch"] == ["64", "32", ""]
    assert set(table) >= {"rescales", "lost steps", "optimizer steps (whole run)"}


def test_comparison_json_holds_both_runs_the_target_and_the_ratios() -> None:
    found = json.loads(json.dumps(comparison_json(compare(POLICY, BASELINE))))
    assert set(found) == {"quality", "higher_is_better", "target", "policy", "baseline",
                          "ratios_baseline_over_policy"}
    assert set(found["policy"]) == {"label", "steps", "samples", "wall_seconds",
                                    "final_quality", "final_batch", "rescales", "lost_steps",
                                    "to_target"}
    assert found["policy"]["to_target"] == {"steps": 6, "samples": 256, "wall_seconds": 5.5}
    assert found["quality"] == "accuracy" and found["higher_is_better"] is True


def test_curves_put_quality_on_steps_and_time_and_replicas_per_process_count() -> None:
    lines = curves(POLICY, ACCURACY, procs_per_replica=2)
    assert lines.quality_by_step == ([4, 6, 7], [0.72, 0.81, 0.82])
    assert lines.quality_by_time[0] == [3.5, 5.5, 6.5]
    assert lines.batch_by_time[1] == [32] * 4 + [64] * 3
    assert lines.replicas_by_time[1] == [0.5] * 4 + [1.0] * 3


def test_plot_writes_comparison_png(tmp_path: Path) -> None:
    found = compare(POLICY, BASELINE)
    picture = plot_comparison((POLICY, BASELINE), found,
                              tmp_path / "comparison.png", procs_per_replica=1)
    assert picture.read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_baseline_spec_is_the_job_with_policy_fixed_and_nothing_else_changed(
    example: Path,
) -> None:
    spec = load_spec(example)
    before = spec.model_dump()
    twin = baseline_spec(spec)
    assert twin.batch.policy == "fixed"
    expected = {**before, "batch": {**before["batch"], "policy": "fixed"}}
    assert twin.model_dump() == expected
    assert spec.model_dump() == before, "the job's own spec was changed"


def test_baseline_of_a_fixed_job_is_refused(tmp_path: Path) -> None:
    job = tmp_path / "fixed.yaml"
    job.write_text("epochs: 1\nbatch: {initial: 32, policy: fixed}\n")
    options = LocalOptions(job, run_dir=tmp_path / "run", baseline=True)
    with pytest.raises(LocalError, match="already fixed"):
        prepare_baseline(options, *prepare(options))


def test_a_new_run_clears_the_baseline_that_an_earlier_run_left_unfinished(
    tmp_path: Path,
) -> None:
    twin = LocalPaths(tmp_path / "baseline")
    twin.checkpoints.mkdir(parents=True)
    twin.trace.write_text("from a baseline that died before its first checkpoint\n")
    options = LocalOptions(EXAMPLES[0], run_dir=tmp_path, baseline=True)
    name, spec, paths = prepare_baseline(options, *prepare(options))
    assert paths == twin and name.endswith("-baseline") and spec.batch.policy == "fixed"
    assert not twin.trace.exists()


def test_resume_starts_a_baseline_that_never_started(tmp_path: Path) -> None:
    ran = LocalPaths(tmp_path)
    ran.checkpoints.mkdir(parents=True)
    (ran.checkpoints / "ckpt-00000100.pt").write_bytes(b"x")
    options = LocalOptions(EXAMPLES[0], run_dir=tmp_path, resume=True, baseline=True)
    _, _, twin = prepare_baseline(options, *prepare(options))  # no "nothing to resume" error
    assert twin.run_dir == tmp_path / "baseline"


def test_resume_takes_a_finished_run_as_it_is_and_starts_nothing(tmp_path: Path) -> None:
    paths = LocalPaths(tmp_path)
    paths.trace.write_text("".join(json.dumps(r) + "\n" for r in BASELINE.records))
    succeeded = {"conditions": [{"type": "Succeeded", "status": "True"}]}
    (tmp_path / "status.json").write_text(json.dumps(succeeded))
    options = LocalOptions(EXAMPLES[0], run_dir=tmp_path, resume=True, baseline=True)
    spec = load_spec(EXAMPLES[0])
    console = Console(record=True)
    outcome = asyncio.run(run_unless_finished("j", spec, paths, options, console, "hint"))
    assert outcome.succeeded and outcome.run_dir == tmp_path
    assert "finished already" in console.export_text()
    assert not paths.sessions.exists(), "a process was started"
