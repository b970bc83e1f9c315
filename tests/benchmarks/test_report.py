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
