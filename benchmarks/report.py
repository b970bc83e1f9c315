"""The report of a benchmark run: the table printed at the end, and results.json (rows from comparisons.py)."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

from comparisons import comparisons


def fmt(v, unit: str = "") -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if unit == "CER":
        return f"{v:.3f}"
    if unit in ("ms", "ms/step") or abs(v) < 10:
        return f"{v:.2f}" if abs(v) < 10 else f"{v:.1f}"
    return f"{v:,.0f}"


def _ratio(r: dict) -> str:
    """'2.97x', or for runs that took turns the median of the rounds' ratios and their range: '3.03x (2.72-3.17)'."""
    if r["ratio"] is None:
        return "-"
    rounds = r.get("ratio_rounds") or []
    spread = f" ({min(rounds):.2f}-{max(rounds):.2f})" if len(rounds) > 1 else ""
    return f"{r['ratio']:.2f}x{spread}"


def table(rows: list[dict]) -> str:
    head = ["comparison", "unit", "ours", "baseline", "ratio", "target", "met?", "load", "other CPU"]
    lines = [head]
    for r in rows:
        lines.append(
            [
                r["comparison"],
                r["unit"],
                fmt(r["ours"], r["unit"]),
                fmt(r["baseline"], r["unit"]),
                _ratio(r),
                r["target"] or "-",
                fmt(r["target_met"]) if r["target_met"] is not None else "-",
                f"{r['load_1min']:.2f}" if r["load_1min"] is not None else "-",
                f"{r['other_cpu_cores']:.2f}" if r["other_cpu_cores"] is not None else "-",
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    out = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(lines[0], widths)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    out += ["| " + " | ".join(c.ljust(w) for c, w in zip(line, widths)) + " |" for line in lines[1:]]
    return "\n".join(out)


def results(
    command: str, mode_name: str, mode: dict, seconds: float, waited: float, facts: dict, start_quiet: dict, res: dict
) -> dict:
    """The content of results.json: the run's settings, machine and load, the rows and every phase's details."""
    rows = comparisons(res, mode, facts["cores_available"])
    return {
        "command": command,
        "mode": mode_name,
        "mode_settings": mode,
        "finished": dt.datetime.now().isoformat(timespec="seconds"),
        "seconds": round(seconds, 1),
        "seconds_waiting_for_quiet": round(waited, 1),
        "machine": facts,
        "load": {"at_start": start_quiet, "loadavg_at_end": [round(x, 2) for x in os.getloadavg()]},
        "comparisons": rows,
        "targets_missed": [r["comparison"] for r in rows if r["target_met"] is False],
        "details": res,
    }


def keep_previous(res: dict, output: Path, mode_name: str) -> dict[str, str]:
    """Fill `res` with the phases a previous run of the same mode wrote to `output` and this one did not
    run (`--phases quality` adds its row to a full run's file instead of replacing it) -> {phase: when it ran}."""
    if not output.exists():
        return {}
    previous = json.loads(output.read_text())
    if previous.get("mode") != mode_name:
        return {}
    earlier = previous.get("kept_from_previous", {})
    kept = {}
    for phase, details in previous.get("details", {}).items():
        if phase not in res:
            res[phase] = details
            kept[phase] = earlier.get(phase, previous.get("finished", ""))
    return kept


def write(results: dict, output: Path) -> None:
    """Write results.json, then print the table and the missed targets."""
    output.write_text(json.dumps(results, indent=1, default=str))
    facts, start, rows = results["machine"], results["load"]["at_start"], results["comparisons"]
    print(
        f"\nBenchmarks ({results['mode']} mode), {facts['cpu_model']}, {facts['cores_available']} cores, "
        f"{facts['ram_gb']} GB RAM; Python {facts['python']}, TensorFlow {facts['tensorflow']}, "
        f"Keras {facts['keras']}, MLflow {facts['mlflow']}"
    )
    print(
        f"load average at start {start['load_1min']} (waited {start['waited_seconds']}s); "
        f"'load' = highest 1-min load average during the measurement (the benchmark's own processes count "
        f"too), 'other CPU' = cores used meanwhile by processes outside the benchmark; ratio = ours / baseline, "
        f"or where the two took turns in rounds, the median of the rounds' ratios (their range in brackets), "
        f"with the median run of each side\n"
    )
    print(table(rows))
    for phase, when in results.get("kept_from_previous", {}).items():
        print(f"(the {phase} rows are from the run of {when}, kept from the previous {output.name})")
    print(
        f"\n{len(rows)} comparisons in {results['seconds']:.0f}s ({results['seconds_waiting_for_quiet']:.0f}s of it "
        f"waiting for a quiet machine); results in {output}"
    )
    for r in rows:
        if r["target_met"] is False:
            print(
                f"TARGET MISSED: {r['comparison']}: ours {fmt(r['ours'], r['unit'])} {r['unit']} vs baseline "
                f"{fmt(r['baseline'], r['unit'])} (ratio {r['ratio']:.2f}x), target {r['target']}"
            )
