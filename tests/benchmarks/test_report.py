"""benchmarks/report.py: a run of some phases adds its rows to the previous results.json of the same mode."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import report  # noqa: E402


def _previous(path: Path, mode: str, **extra) -> None:
    details = {"input": {"images": 10}, "quality": {"old": True}}
    path.write_text(json.dumps({"mode": mode, "finished": "2026-12-01T10:00:00", "details": details, **extra}))


def test_phases_not_run_now_are_kept_from_the_previous_run_of_the_same_mode(tmp_path):
    out = tmp_path / "results.json"
    _previous(out, "full")
    res = {"quality": {"new": True}}
    kept = report.keep_previous(res, out, "full")
    assert kept == {"input": "2026-12-01T10:00:00"}
    assert res == {"quality": {"new": True}, "input": {"images": 10}}  # the phase run now wins


def test_a_kept_phase_keeps_the_date_it_was_measured_through_later_runs(tmp_path):
    out = tmp_path / "results.json"
    _previous(out, "full", kept_from_previous={"input": "2026-11-30T09:00:00"})
    kept = report.keep_previous({}, out, "full")
    assert kept == {"input": "2026-11-30T09:00:00", "quality": "2026-12-01T10:00:00"}


def test_nothing_is_kept_from_another_mode_or_a_missing_file(tmp_path):
    out = tmp_path / "results.json"
    assert report.keep_previous({}, out, "full") == {}
    _previous(out, "quick")
    res: dict = {}
    assert report.keep_previous(res, out, "full") == {} and res == {}


def test_runs_that_took_turns_compare_by_the_median_of_their_rounds_ratios():
    import comparisons

    # session 19's serving rounds at concurrency 8: ours vs `mlflow models serve`, taking turns
    rounds = [(626.0, 206.9), (634.9, 233.7), (648.6, 204.3)]
    r = comparisons.row("serve", "images/s", None, None, "higher", ">= 3x", rounds=rounds)
    assert r["ours"] == 634.9 and r["baseline"] == 206.9  # each side's median run
    assert [round(x, 2) for x in r["ratio_rounds"]] == [3.03, 2.72, 3.17]
    assert round(r["ratio"], 2) == 3.03  # pooled, the same requests give 2.97x
    assert "| 3.03x (2.72-3.17) |" in report.table([r])
    plain = comparisons.row("rss", "MB", 795.0, 1040.0, "lower")
    assert plain["ratio_rounds"] is None and "| 0.76x |" in report.table([plain])


def _pipeline(turns: list | None, steady: float) -> dict:
    out = {"steady_images_per_second": steady, "cold_images_per_second": steady / 4}
    return out if turns is None else {**out, "turns": turns}


def test_the_input_rows_compare_reader_and_baseline_turn_by_turn():
    import comparisons

    # 1,000 images a turn; the baseline's second turn was disturbed (twice as slow)
    ours = _pipeline([[10_000, 0.25], [11_000, 0.25], [9_000, 0.25]], 40_000.0)
    keras = _pipeline([[1_000, 0.25], [1_000, 0.5], [1_000, 0.25]], 3_000.0)
    res = {"_measure": {}, "images": 1000, "ours_eval": ours, "ours_train_augment": ours}
    res |= {"keras_per_epoch_decode": keras, "keras_as_published_cache": keras}
    augment = comparisons._input_rows(res)[1]
    assert [round(x) for x in augment["ratio_rounds"]] == [10, 22, 9]
    assert augment["ratio"] == 10.0 and augment["ours"] == 40_000.0 and augment["target_met"] is True
    # a results.json from before turns were kept: the steady figures, no rounds
    old = {**res, "ours_train_augment": _pipeline(None, 12_000.0), "keras_per_epoch_decode": _pipeline(None, 3_000.0)}
    augment = comparisons._input_rows(old)[1]
    assert augment["ratio"] == 4.0 and augment["ratio_rounds"] is None and augment["target_met"] is False


def test_training_compares_interleaved_epochs_round_by_round_leaving_out_the_tracing_one():
    import comparisons

    ours = {"images_per_epoch": 1000, "epoch_seconds": [5.8, 3.4, 3.3, 3.5]}
    keras = {"images_per_epoch": 1000, "epoch_seconds": [5.7, 3.7, 4.0, 3.6]}
    rounds = comparisons._epoch_rounds(ours, keras)
    assert [(round(o), round(k)) for o, k in rounds] == [(294, 270), (303, 250), (286, 278)]
    assert comparisons._epoch_rounds({**ours, "epoch_seconds": [5.8, 3.4]}, keras) is None  # one round: too few
